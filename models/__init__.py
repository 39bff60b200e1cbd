"""The learning side (torch): encoder, decoders, losses, training and inference."""
