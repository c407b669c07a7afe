"""Reports: self-contained HTML pages and matplotlib figures of attributions (placeholder until issue 6 lands)."""
