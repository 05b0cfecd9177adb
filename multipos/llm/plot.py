"""V2PE positions of one interleaved image-text sequence, drawn for several increments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from multipos.llm.v2pe import v2pe_positions
from multipos.plot import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["v2pe_positions_figure"]


def _delta_name(delta: float) -> str:
    if delta == 1.0:
        return "1"
    inverse = 1.0 / delta
    return f"1/{inverse:g}" if inverse == round(inverse) else f"{delta:g}"


def v2pe_positions_figure(
    segments: Sequence[tuple[str, int]],
    deltas: Sequence[float] = (1.0, 0.25, 1 / 16),
    *,
    tokens_per_tile: int = 256,
    title: str = "V2PE positions of one interleaved image-text sequence",
) -> Figure:
    r"""Position against token index for each visual increment, image tokens shaded.

    The positions are those of :func:`multipos.llm.v2pe_positions` ("V2PE: Improving Multimodal
    Long-Context Capability of Vision-Language Models with Variable Visual Position Encoding",
    Ge et al., 2024, arXiv:2412.09616, Eq. 4-5): text advances by 1, visual token ``k`` of an
    image sits at :math:`r + k\delta`, and the running position is rounded up after the image.
    One line per ``delta``; the visual tokens' index ranges are shaded.

    Args:
        segments: ``("text", num_tokens)`` / ``("image", num_tiles)`` pairs, as for
            :func:`~multipos.llm.v2pe_positions`.
        deltas: Fixed visual increments in (0, 1], one line each.
        tokens_per_tile: Visual tokens per tile.
        title: Figure title.

    Returns:
        The figure (save it with :func:`multipos.plot.save`).

    Raises:
        ValueError: If ``deltas`` is empty, or on the errors of
            :func:`~multipos.llm.v2pe_positions` (bad segments, a delta outside (0, 1]).
        ImportError: If matplotlib is not installed.
    """
    if len(deltas) == 0:
        raise ValueError("deltas must name at least one visual increment to draw")
    lines = [(float(d), v2pe_positions(segments, float(d), tokens_per_tile)) for d in deltas]
    fig, (ax,) = new_figure(
        title,
        "Look for: text tokens (white bands) climb one position per token whatever delta is; "
        "inside an image (grey bands) the position climbs by delta per visual token and is "
        "rounded up to the next integer after it, so with a small delta the whole sequence "
        "ends at a far smaller position than its token count.",
        size=(8.0, 5.2),
    )
    index = 0
    shaded = False
    for kind, count in segments:
        width = count * tokens_per_tile if kind == "image" else count
        if kind == "image":
            ax.axvspan(
                index - 0.5,
                index + width - 0.5,
                color="0.88",
                zorder=0,
                label=None if shaded else "visual tokens",
            )
            shaded = True
        index += width
    for delta, positions in lines:
        top = float(positions.max()) if positions.numel() else 0.0
        ax.plot(
            range(positions.numel()),
            positions.tolist(),
            lw=1.6,
            label=f"delta = {_delta_name(delta)} (largest position {top:g})",
        )
    ax.set_xlabel("token index in the sequence")
    ax.set_ylabel("V2PE position (float)")
    ax.set_xlim(-0.5, index - 0.5)
    ax.set_ylim(bottom=-1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    return fig
