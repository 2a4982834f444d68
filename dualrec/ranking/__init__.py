"""Systems that score every catalogue movie for a history: the interface, the Stage 1 LSTM and the baselines."""
