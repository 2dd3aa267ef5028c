"""smartthumb's HTTP front: jobs, batches, images, the web page, health and metrics."""
