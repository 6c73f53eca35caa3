import subprocess
import sys

from matplotlib.figure import Figure

from ftlab import Run, RunConfig
from ftlab.foundation.jupyter import show_figures_inline
from ftlab.ui.plot import frame_steps, plot_loss_curve, plot_losses

SHELL_SCRIPT = """
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
import ftlab
from matplotlib.figure import Figure
fig = Figure(); fig.subplots().plot([0, 1], [1, 0])
data, _ = shell.display_formatter.format(fig)
print(sorted(data))
"""


def test_figures_render_as_png_in_ipython():
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    assert show_figures_inline(shell)
    data, _ = shell.display_formatter.format(fig)
    assert "image/png" in data


def test_importing_ftlab_in_ipython_makes_returned_figures_pictures():
    # a fresh interpreter: ftlab's own import must register the formatter, with no pyplot
    out = subprocess.run([sys.executable, "-c", SHELL_SCRIPT], capture_output=True, text=True, check=True).stdout
    assert "image/png" in out, out


def test_outside_ipython_nothing_is_registered():
    out = subprocess.run([sys.executable, "-c", "import sys, ftlab; print(ftlab.show_figures_inline(), 'IPython' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"], out


def test_a_plot_returned_by_a_notebook_cell_is_saved_as_a_picture():
    # the real path: a Jupyter kernel (inline backend, no pyplot imported) running a cell
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ftlab\nfrom ftlab.ui.plot import plot_memory\n"
        "plot_memory({'a': ftlab.MemoryBreakdown(weights=1 << 20, gradients=0, optimizer=0, activations=1 << 20)})")])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    outputs = nb.cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs), outputs


def test_quantization_plot_draws_the_median_blocks_levels_and_one_point_per_block():
    import torch
    from ftlab.lessons.quant import plot_quantization_error
    from ftlab.lessons.quant import nf4_code, quantize_nf4
    torch.manual_seed(0)
    weight = torch.randn(64, 128) * 0.02
    weight[0, 0] = 1.0  # one outlier: the x range must still follow the bulk
    q = quantize_nf4(weight, blocksize=64)
    fig = plot_quantization_error(weight, q)
    left, right = fig.axes
    lo, hi = left.get_xlim()
    assert hi < 0.2, "the outlier must not set the histogram's range"
    median_absmax = weight.reshape(-1, 64).abs().amax(dim=1).median().item()
    drawn = sorted(line.get_xdata()[0] for line in left.lines)
    expected = [v for v in (nf4_code() * median_absmax).tolist() if lo <= v <= hi]
    assert len(drawn) == len(expected) >= 10
    assert torch.allclose(torch.tensor(drawn), torch.tensor(sorted(expected)))
    assert len(right.collections[0].get_offsets()) == weight.numel() // 64



def _look(line):
    """What a reader sees of a line: its legend entry, style and points."""
    return (line.get_label(), line.get_color(), line.get_alpha(), line.get_linewidth(), line.get_marker(),
            list(line.get_xdata()), list(line.get_ydata()))


def test_a_loss_curve_drawn_alone_looks_like_the_one_plot_losses_draws():
    run = Run(config=RunConfig(), label="a", history=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
              evals=[{"step": 2, "eval_loss": 1.5}])
    ax = Figure().subplots()
    frame_steps(ax, "cross-entropy loss", "Loss")
    plot_loss_curve([1, 2], [2.0, 1.0], "train", "C0", "a train", ax=ax)
    plot_loss_curve([2], [1.5], "eval", "C0", "a eval", ax=ax)
    assert [_look(line) for line in ax.get_lines()] == [_look(line) for line in plot_losses([run]).axes[0].get_lines()]
    assert ax.get_legend() is None and ax.get_xlabel() == "optimizer step" and ax.get_title() == "Loss"


def _seeded(model: str, finals: list[float], label: str) -> list[Run]:
    """Fake runs of one arm: eval loss 3.0 at step 0, then ``final`` at step 10."""
    return [Run(config=RunConfig(model=model, seed=42 + i), label=label, metrics={"final_eval_loss": f},
                history=[{"step": 10, "loss": f, "tokens": 100}],
                evals=[{"step": 0, "eval_loss": 3.0}, {"step": 10, "eval_loss": f}]) for i, f in enumerate(finals)]


def test_plot_arms_draws_each_arms_mean_inside_a_band_spanning_every_seed():
    from ftlab.ui.plot import plot_arms
    arms = {"a": _seeded("tiny", [1.0, 1.2, 1.4], "a"), "b": _seeded("tiny", [2.0, 2.1, 2.2], "b")}
    ax = plot_arms(arms).axes[0]
    means = [list(line.get_ydata()) for line in ax.lines]
    assert means == [[3.0, 1.2], [3.0, 2.1]]
    bands = [c.get_paths()[0].vertices[:, 1] for c in ax.collections]
    assert len(bands) == 2 and min(bands[0]) == 1.0 and max(bands[0]) == 3.0 and {1.0, 1.4} <= set(bands[0])
    assert "nats per byte" in ax.get_ylabel()  # a byte-level model's loss unit
    tokens = plot_arms(arms, x="tokens").axes[0]
    assert list(tokens.lines[0].get_xdata()) == [0, 100]


def test_plot_final_marks_every_seed_and_the_mean_with_its_t_interval():
    from ftlab.experiments.stats import noise_band
    from ftlab.ui.plot import plot_final
    arms = {"lr=1e-3": _seeded("smollm2-135m", [1.0, 1.2, 1.4], "x"), "lr=1e-2": _seeded("smollm2-135m", [2.0, 2.2], "y")}
    ax = plot_final(arms, x=[1e-3, 1e-2], logx=True, xlabel="learning rate").axes[0]
    dots = sorted(y for line in ax.lines if line.get_marker() == "o" for y in line.get_ydata())
    assert dots == [1.0, 1.2, 1.4, 2.0, 2.2]
    _, low, high = noise_band([1.0, 1.2, 1.4])
    bars = [c for c in ax.collections if c.get_segments()]
    assert any(abs(s[0][1] - low) < 1e-9 and abs(s[1][1] - high) < 1e-9 for c in bars for s in c.get_segments())
    assert "nats per token" in ax.get_ylabel() and ax.get_xscale() == "log"


def test_reliability_pools_each_arms_seeds_weighted_by_tokens():
    from ftlab import Run, RunConfig
    from ftlab.ui.plot import plot_reliability
    seed = lambda acc: Run(config=RunConfig(), metrics={"reliability": [
        {"low": 0.5, "high": 0.6, "tokens": 10, "confidence": 0.55, "accuracy": acc},
        {"low": 0.9, "high": 1.0, "tokens": 30, "confidence": 0.95, "accuracy": 0.9}]})
    fig = plot_reliability({"a": [seed(0.2), seed(0.6)]})
    pooled = fig.axes[0].lines[-1].get_xydata().tolist()
    assert pooled == [[0.55, 0.4], [0.95, 0.9]]
    assert fig.axes[0].get_xlabel() == "confidence of the top token"
