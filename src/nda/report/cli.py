"""`nda explain` and `nda report` (placeholder until issue 6 lands)."""

import click


@click.command("explain", hidden=True)
def explain_cmd() -> None:
    """Not available yet."""
    raise click.ClickException("nda explain is not available yet")


@click.command("report", hidden=True)
def report_cmd() -> None:
    """Not available yet."""
    raise click.ClickException("nda report is not available yet")
