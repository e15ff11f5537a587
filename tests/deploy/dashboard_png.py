"""The dashboard's panels as one PNG, from the data tests/deploy.rs took
from a real Prometheus scraping a real worker.

    python3 dashboard_png.py <dashboard-data.json> <dashboard.png>

The JSON: {"title", "seconds", "panels": [{"title", "unit", "series":
[{"label", "points": [[seconds since start, value or null], ...]}]}]}.
Panels are laid out two a row, like the dashboard; the last one spans the
row when it is alone on it.
"""

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNITS = {"ops": "per second", "s": "seconds", "short": "entries"}


def main(data_path, png_path):
    with open(data_path, encoding="utf-8") as f:
        data = json.load(f)
    panels = data["panels"]
    rows = math.ceil(len(panels) / 2)
    fig = plt.figure(figsize=(14, 3.2 * rows), dpi=80)
    grid = fig.add_gridspec(rows, 2, hspace=0.55, wspace=0.15)
    for index, panel in enumerate(panels):
        row, column = divmod(index, 2)
        alone = index == len(panels) - 1 and column == 0
        axes = fig.add_subplot(grid[row, :] if alone else grid[row, column])
        for series in panel["series"]:
            xs = [p[0] for p in series["points"]]
            ys = [float("nan") if p[1] is None else float(p[1]) for p in series["points"]]
            axes.plot(xs, ys, linewidth=1.2, label=series["label"])
        axes.set_title(panel["title"], fontsize=10, loc="left")
        axes.set_ylabel(UNITS.get(panel["unit"], panel["unit"]), fontsize=8)
        axes.set_xlim(0, data["seconds"])
        axes.set_ylim(bottom=0)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        if panel["series"]:
            axes.legend(fontsize=7, loc="upper left", frameon=False)
        else:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    fig.suptitle(
        f"{data['title']}: {data['seconds']:.0f} s of a real worker scraped by Prometheus "
        "(seconds since the start)",
        fontsize=11,
    )
    fig.savefig(png_path, bbox_inches="tight")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
