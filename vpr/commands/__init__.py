"""One module per `vpr` subcommand (see vpr.cli)."""
