"""The `capsa` command line: Docker's commands and flags over capsa's engine."""
