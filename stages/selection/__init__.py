"""What to label next: pure functions that rank unlabeled images for a person to label, from the pretrained
encoder's features (diversity.py: k-center greedy and TypiClust's typical cluster points) and, once a fine-tuned
teacher exists, its softmax outputs (uncertainty.py); ranking.py picks a strategy and says why each image was chosen,
and label_lists.py writes the picks as a CSV to fill in or as Label Studio tasks."""
