"""Pure, dependency-light checks the pipeline stages run on requests and responses."""
