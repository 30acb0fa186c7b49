"""The four services of relief, one package each."""
