"""From an LLM's words to MovieLens movies: prompts, answer parsing, title matching and the Stage 2 pipeline."""
