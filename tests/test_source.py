"""What a chapter prints of a mechanism is the package's function, docstring left out."""
import pytest

from ftlab.lessons.schedules import warmup_cosine_lr
from ftlab.ui.source import code_of


def _documented(x: int) -> int:
    """A docstring
    on two lines."""
    y = x + 1  # a comment stays
    return y


def _bare(x):
    return x


def test_the_docstring_is_left_out_and_everything_else_kept():
    assert code_of(_documented) == "def _documented(x: int) -> int:\n    y = x + 1  # a comment stays\n    return y"
    assert code_of(_bare) == "def _bare(x):\n    return x"


def test_a_lesson_function_prints_as_code_that_still_compiles():
    text = code_of(warmup_cosine_lr)
    assert text.startswith("def warmup_cosine_lr(") and '"""' not in text
    import ftlab.lessons.schedules as module
    namespace = {k: v for k, v in vars(module).items() if k != "warmup_cosine_lr"}
    exec(compile(text, "<shown>", "exec"), namespace)
    assert namespace["warmup_cosine_lr"](5, learning_rate=1.0, warmup_steps=10, num_training_steps=100) == pytest.approx(
        warmup_cosine_lr(5, learning_rate=1.0, warmup_steps=10, num_training_steps=100))


def test_a_class_is_refused():
    with pytest.raises(TypeError, match="give a function"):
        code_of(pytest.ExceptionInfo)
