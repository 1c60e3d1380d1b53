"""The packaged YAML configs, installed as ``agq.configs``: ``agq train --config NAME`` finds them."""
