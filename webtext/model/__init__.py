"""The bundled GPT-2: model, data loading from token shards, training, sampling, evaluation, export."""
