# The two commands a newcomer runs (see README):  make lab   and   make test
# Every step is written once, in make.py, which also runs them where there is no make (Windows:
# `python make.py lab`, `python make.py test`); each target here calls it. Settings pass through
# the environment:
#   make lab TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"   (a CUDA torch)
#   make lab LAB_ARGS="--ip=0.0.0.0 --port=8888"                                            (in a container)
#   make test TEST_WORKERS=4                                                                 (more cores)
#   make lab INSTALLER=pip                                                                   (pip instead of uv)
PYTHON ?= python3
export TORCH_SPEC LAB_ARGS TEST_WORKERS NOTEBOOKS INSTALLER
TARGETS := setup lab trust demo test unit notebooks browser hub chromium postgresql proxy benchmark clean lint lock canary

.PHONY: $(TARGETS)

$(TARGETS):
	@$(PYTHON) make.py $@
