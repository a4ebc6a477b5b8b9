"""The files that join the stages: the detection manifest and the embeddings."""
