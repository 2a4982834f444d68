"""Baselines of the scoreboard: MostPop and RecBole's reference models behind the Recommender interface."""
