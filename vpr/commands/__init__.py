"""One module per `vpr` subcommand (see vpr.cli), plus `options`: the argument helpers they share."""
