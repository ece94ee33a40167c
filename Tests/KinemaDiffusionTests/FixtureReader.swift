import KinemaCPU
import KinemaTensor
import KinemaTestSupport

/// A golden fixture file of Tests/Fixtures, read through Kinema's safetensors reader, with host accessors.
struct Fixture {
    let file: SafetensorsFile
    private let host = CPUBackend(threads: 1)

    init(_ name: String) throws {
        file = try SafetensorsFile(url: Fixtures.url(name))
    }

    func shape(_ key: String) -> [Int] { (try? file.info(key).shape) ?? [] }

    /// Any numeric tensor's values as doubles (f64 fixtures exactly).
    func doubles(_ key: String) -> [Double] {
        do {
            return host.downloadDouble(try file.tensor(key, on: host))
        } catch {
            preconditionFailure("\(error)")
        }
    }

    /// An integer tensor's values.
    func ints(_ key: String) -> [Int] { doubles(key).map { Int($0) } }
}
