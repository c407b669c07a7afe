"""Tests of the HTML report, figures and their CLI (browser tests: test_browser.py)."""
