import os

# Tests never reach the network: the Hugging Face hub is unreachable on CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
