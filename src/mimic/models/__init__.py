"""Model families: how MimIC finds its way around each architecture, loads it and talks to it.

- :mod:`mimic.models.adapters`: per family, the decoder layers and how a prompt becomes inputs;
  the shape fields every method config carries;
- :mod:`mimic.models.loading`: loading a model and its processor (or wrapping one in memory);
- :mod:`mimic.models.prompts`: the prompt formats (the paper's, the reference code's presets);
- :mod:`mimic.models.generation`: encoding prompts, greedy and beam decoding;
- :mod:`mimic.models.hidden_states`: per-layer hidden states recorded at chosen positions;
- :mod:`mimic.models.shapes`: text-stack shapes of the paper's models, without a download.
"""
