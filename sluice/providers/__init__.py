"""Model providers: the model catalog and the HTTP clients that call model servers."""
