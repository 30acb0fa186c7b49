"""`relief`: the console command (SPEC §3). Each group of commands lives in its own module."""

from __future__ import annotations

import typer

from relief_cli import finance_commands, intake_commands, report_commands, review_commands, stack_commands
from shared.logging import configure_logging

app = typer.Typer(
    name="relief",
    help="Direct-assistance disbursement: register, decide, pay once, count people reached.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Logs go to stderr as JSON lines, so `--json` output on stdout stays one object."""
    configure_logging("cli", level="WARNING")


for module in (stack_commands, intake_commands, review_commands, finance_commands, report_commands):
    module.register(app)


if __name__ == "__main__":
    app()
