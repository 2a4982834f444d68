"""The scoreboard: protocols, metrics with intervals, results files; every system on the same cases."""
