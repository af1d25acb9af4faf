"""The search: spaces, samplers, Ray Tune workers, multi-fidelity evaluation, outputs."""
