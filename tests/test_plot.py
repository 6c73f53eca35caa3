import subprocess
import sys

from matplotlib.figure import Figure

from ftlab import Run, RunConfig
from ftlab.ui.plot import frame_steps, plot_loss_curve, plot_losses, show_figures_inline

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
