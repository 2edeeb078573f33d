import ArgumentParser
import Foundation

/// Hidden: the VM's /init always starts this binary; a harness test that needs a sequence of
/// commands in the guest (kill a run, then restore) asks it to become a shell script.
struct ExecScript: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "exec-script", shouldDisplay: false)

    @Argument var script: String

    func run() throws {
        let args = ["/bin/sh", script]
        var cargs = args.map { strdup($0) } + [nil]
        execv("/bin/sh", &cargs)
        throw UsageError("cannot exec /bin/sh \(script): \(String(cString: strerror(errno)))")
    }
}

import Exerciser
