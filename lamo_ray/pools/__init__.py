"""The pools that continual fine-tuning (`lamo_ray.continual`) attaches to a frozen MDDT (`lamo_ray.mddt`):
model parts, so they live in the models layer (issue 29).

- `lamo_ray.pools.modulation`: L2M's pool of LoRA modulators with keys, applied grouped by modulator;
- `lamo_ray.pools.prompts`: L2P's prompt pool, prompts in front of every layer's input.

`lamo_ray.continual.pool` and `lamo_ray.continual.prompts` re-export them (older imports, pickles).
"""
