"""Stage 5: byte-level BPE tokenizer and sharded Arrow token files."""
