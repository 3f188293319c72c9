"""The warm actor pool: model servers (NIM, vLLM, containers, endpoints, local processes) for
actor tasks. Its public names are exported by `nimflow`; these modules are internal."""
