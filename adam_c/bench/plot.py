"""plot.py: the size sweep's figure: ns per element against size, the memory floor as a band, the host in the title."""
from .harness import FLOOR


def draw_plot(sweep, path, threads, host):
    """One panel per dtype. The floor (the memory probe) is drawn as the band between its samples' quartiles with
    its median as a dashed line: on a shared host it moves from sample to sample, and the band shows by how much;
    adam_c and its peers are medians with their quartiles as error bars. `host`: the caption (harness.host_note)."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]  # optional: the bench extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    dtypes = sorted({r["dtype"] for r in sweep})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 5.2), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in sweep if r["dtype"] == dtype]
        for impl in dict.fromkeys(r["implementation"] for r in rows):
            pts = sorted((r["n_elements"], r["median_ns"] / r["n_elements"], r["q1_ns"] / r["n_elements"],
                          r["q3_ns"] / r["n_elements"]) for r in rows if r["implementation"] == impl)
            x, median, q1, q3 = ([p[i] for p in pts] for i in range(4))
            if impl == FLOOR:
                ax.fill_between(x, q1, q3, color="0.6", alpha=0.35, linewidth=0,
                                label=f"{impl}: interquartile band")
                ax.plot(x, median, color="black", linestyle="--", linewidth=1.5, label=f"{impl}: median")
            else:
                ax.errorbar(x, median, yerr=[[m - lo for m, lo in zip(median, q1)],
                                             [hi - m for m, hi in zip(median, q3)]],
                            marker="o", markersize=4, capsize=2, label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("elements (one tensor)")
        ax.set_ylabel("ns per element per step (median, quartiles)")
        ax.set_title(f"Adam step, {dtype}, {threads} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(host, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
