import Pipelines
import SluiceCLI

// Every `sluice` command (broker, worker, call, materialize, runs, bench, run, topics), serving this package's
// pipelines by name.
await SluiceCommand.start(pipelines: [AnyPipeline(FraudCheck.pipeline)])
