"""The ftlab command line: prepare a workshop, browse the run cache, predict memory, train from a JSON config; and ``ftlab hosted``, which writes the Colab/Kaggle first cell into the chapters."""
__all__ = ["common", "doctor", "hosted", "main", "prepare", "runs"]
