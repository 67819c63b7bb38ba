"""``dlcv report``: one self-contained HTML page (figures embedded, nothing fetched) from run folders."""

from dlcv.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
