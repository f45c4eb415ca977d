"""Training: the objectives SVI minimizes, the engines that run them (eager or traced), KL warm-up
and beta, learning-rate recipes, and the loop over epochs and minibatches. Nothing here reads a run
configuration or writes a file: settings arrive as keyword arguments."""
