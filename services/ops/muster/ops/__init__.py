"""The ops process (`muster worker ops`, rq) and the operator's commands: replay and restore,
projection checksums, archive verification and trimming by hand."""
