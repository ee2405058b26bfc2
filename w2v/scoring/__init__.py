"""Error rates and reports: wer.py (alignment, errs/recogs/summary), results.py
(results.json, RESULTS.md, plots), report.py (all of it for one decoding run)."""
