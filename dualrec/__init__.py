"""DUALRec: a multi-modal LSTM and an instruction LLM recommending movies together (MovieLens 1M)."""

__version__ = "0.1.0"
