"""Reports: a self-contained HTML page (`write_report`) and matplotlib figures of NDA attributions.

    from nda.report import write_report
    page = write_report(result, train, queries, "report/", k=8, png=True)   # report/index.html
"""

from .html import image_uri, script_json, write_report

__all__ = ["write_report", "script_json", "image_uri"]
