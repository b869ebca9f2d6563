"""The HTML report of `tubelens demo`: one self-contained page a newcomer can open and read top to bottom.

A summary first (what ran, whether each model beats its baselines), then the pipeline and its dead letters, the
metric tables per split with baselines and 95 % intervals, predicted against actual views, confusion matrices,
similar thumbnails, concept word clouds for popular and unpopular videos (seed 002), occlusion heatmaps, the model
registry and the predictor. The demo fills a `ReportData`; `build_report` writes it; `occlusion_grid` computes a
heatmap's grid from any batch predict function.
"""

from tubelens.devtools.report.data import ConceptClouds, Heatmap, Match, ReportData, SimilarExample, VideoPoint
from tubelens.devtools.report.occlusion import occlusion_grid
from tubelens.devtools.report.page import build_report, render

__all__ = [
    "ConceptClouds",
    "Heatmap",
    "Match",
    "ReportData",
    "SimilarExample",
    "VideoPoint",
    "build_report",
    "occlusion_grid",
    "render",
]
