import ArgumentParser

@main
struct Kinema: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kinema",
        abstract: "Train and sample diffusion transformers for image and video generation.",
        discussion: """
        Kinema trains class-conditional DiTs and text-to-video Lattes on the CPU and on CUDA GPUs, samples images \
        and clips from them, and loads published checkpoints (original DiT, diffusers DiT/PixArt/Latte/AutoencoderKL, \
        transformers BERT). Start with `make demo`.
        """,
        subcommands: [TrainCommand.self, SampleCommand.self, ForwardCommand.self, EvalSyntheticCommand.self,
                      BenchCommand.self, PreprocessCommand.self])
}
