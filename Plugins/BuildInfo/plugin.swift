import Foundation
import PackagePlugin

/// Writes `buildCommit` (the checkout's git commit, "-dirty" with uncommitted changes, "unknown"
/// outside git) for `--version`. Rewritten only when it changes, so a build does not recompile for it.
@main
struct BuildInfo: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let dir = context.pluginWorkDirectoryURL.appending(path: "generated")
        let script = #"""
            c=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null) || c=unknown
            [ "$c" = unknown ] || git -C "$1" diff --quiet HEAD -- 2>/dev/null || c="$c-dirty"
            mkdir -p "$2"
            new="let buildCommit = \"$c\""
            [ "$(cat "$2/BuildInfo.swift" 2>/dev/null)" = "$new" ] || printf '%s\n' "$new" >"$2/BuildInfo.swift"
            """#
        return [.prebuildCommand(displayName: "git commit for --version", executable: URL(fileURLWithPath: "/bin/sh"),
                                 arguments: ["-c", script, "sh", context.package.directoryURL.path, dir.path],
                                 outputFilesDirectory: dir)]
    }
}
