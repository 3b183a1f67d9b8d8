/// A command cannot start because of what it found, not because of how it was called: the cluster does not answer, a
/// topic is missing. Printed as `Error: ...` without the usage text; the process exits with ``exitCode``.
struct UnavailableError: Error, CustomStringConvertible {
    /// `EX_UNAVAILABLE` of sysexits.h: a service the command needs is unavailable (docs/operations.md, "Exit status").
    static let exitCode: Int32 = 69

    let description: String

    init(_ description: String) {
        self.description = description
    }
}
