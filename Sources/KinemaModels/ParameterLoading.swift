import KinemaNN
import KinemaTensor

extension ParameterArena {
    /// Copies every parameter from `lookup(name)`, converting the dtype; a missing tensor or a wrong shape is an
    /// error naming the tensor (`expected` says what kind of checkpoint was expected). The tensors go into the full
    /// weights (exactly into a bf16 model's f32 master), and the compute copy is then cast from the master once.
    public func loadParameters(from source: String, expected: String, _ lookup: (String) throws -> Tensor?) throws {
        for parameter in parameters {
            guard let tensor = try lookup(parameter.name) else {
                throw ModelError.badCheckpoint(path: source, reason: "tensor '\(parameter.name)' is missing; is this "
                    + "\(expected)?")
            }
            guard tensor.shape == parameter.value.shape else {
                throw ModelError.badCheckpoint(path: source, reason: "tensor '\(parameter.name)' has shape "
                    + "\(tensor.shape), the model expects \(parameter.value.shape)")
            }
            backend.copy(tensor, into: parameter.weights)
        }
        refreshValuesFromMaster()
    }
}
