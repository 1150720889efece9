"""Paper reproductions: each experiment declared as data (RunSpecs) and run by the one loop."""

from __future__ import annotations

PAPERS = ("hinton2015",)
