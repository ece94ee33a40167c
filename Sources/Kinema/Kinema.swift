import ArgumentParser

@main
struct Kinema: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kinema",
        abstract: "Train and sample diffusion transformers (DiT) for image and video generation.",
        discussion: """
        Kinema trains class-conditional DiTs on the CPU (and, in later builds, CUDA GPUs), samples from them, and \
        loads published DiT checkpoints in the original and the diffusers layout. Start with `make demo`.
        """,
        subcommands: [TrainCommand.self, SampleCommand.self, ForwardCommand.self, EvalSyntheticCommand.self,
                      BenchCommand.self])
}
