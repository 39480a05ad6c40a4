"""Small models for tests, demos and the default run, and the exactness oracle.

- :mod:`mimic.tiny.models`: tiny random Idefics / Idefics2 / Idefics3 and random ICL batches;
- :mod:`mimic.tiny.families`: a tiny model of every supported family with its real processor class;
- :mod:`mimic.tiny.mini`: the shipped miniature Idefics2 (built, pretrained, and its synthetic episodes);
- :mod:`mimic.tiny.oracle`: exact prefix terms in place of the learned ones reproduce ICL;
- :mod:`mimic.tiny.demo`: ``mimic demo``, the oracle on every family.
"""
