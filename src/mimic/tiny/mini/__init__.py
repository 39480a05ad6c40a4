"""The miniature Idefics2 model: a real Idefics2 architecture, small enough for a laptop CPU."""
