using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Commands;

/// <summary>
/// The standard streams as the commands use them: output whose failure (closed, or its reader gone) is one coded
/// error rather than a crash, and a check for a standard input that can never deliver a line.
/// </summary>
public static class ConsoleStreams
{
    /// <summary>Routes <see cref="Console.Out"/> through a writer whose failures are
    /// <see cref="ErrorCodes.StandardOutputClosed"/>.</summary>
    public static void GuardOutput()
    {
        if (Console.Out is not GuardedWriter) Console.SetOut(new GuardedWriter(Console.Out));
    }

    /// <summary>Writes an error line; when standard error itself is closed there is nobody to tell.</summary>
    public static void WriteError(string line)
    {
        try
        {
            Console.Error.WriteLine(line);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The exit code still says it failed.
        }
    }

    /// <summary>
    /// True when standard input can never deliver a line or its end: file descriptor 0 is closed, or it is a pipe
    /// whose write end this process itself holds. The second is what a closed stdin becomes: the .NET runtime opens
    /// an internal pipe at startup, which takes the lowest free descriptor, 0, so reading "stdin" would wait forever
    /// on the runtime's own pipe. Only Linux exposes the descriptors (/proc/self/fd); elsewhere this is false.
    /// </summary>
    public static bool InputCanNeverArrive()
    {
        if (!OperatingSystem.IsLinux() || !Directory.Exists("/proc/self/fd")) return false;
        try
        {
            var targets = new Dictionary<string, string?>(StringComparer.Ordinal);
            foreach (string fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
            {
                try { targets[Path.GetFileName(fd)] = new FileInfo(fd).LinkTarget; }
                catch (IOException) { } // closed while listing (another thread's file)
            }
            if (!targets.TryGetValue("0", out string? input)) return true;
            if (input is null || !input.StartsWith("pipe:", StringComparison.Ordinal)) return false;
            return targets.Any(t => t.Key != "0" && t.Value == input && IsOpenForWriting(t.Key));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false; // cannot tell: read as usual
        }
    }

    /// <summary>Whether descriptor <paramref name="fd"/> was opened for writing: the access mode in the octal
    /// "flags:" line of /proc/self/fdinfo is O_WRONLY (1) or O_RDWR (2).</summary>
    private static bool IsOpenForWriting(string fd)
    {
        foreach (string line in File.ReadLines($"/proc/self/fdinfo/{fd}"))
        {
            if (!line.StartsWith("flags:", StringComparison.Ordinal)) continue;
            string octal = line["flags:".Length..].Trim();
            long flags = 0;
            foreach (char c in octal)
            {
                if (c is < '0' or > '7') return false;
                flags = flags * 8 + (c - '0');
            }
            return (flags & 3) != 0;
        }
        return false;
    }

    /// <summary>A writer over the real standard output that turns its I/O failures into a coded error.</summary>
    private sealed class GuardedWriter(TextWriter inner) : TextWriter
    {
        public override Encoding Encoding => inner.Encoding;
        public override IFormatProvider FormatProvider => CultureInfo.InvariantCulture;

        public override void Write(char value) => Guard(() => inner.Write(value));
        public override void Write(string? value) => Guard(() => inner.Write(value));
        public override void Write(char[] buffer, int index, int count) => Guard(() => inner.Write(buffer, index, count));
        public override void WriteLine(string? value) => Guard(() => inner.WriteLine(value));
        public override void WriteLine() => Guard(inner.WriteLine);
        public override void Flush() => Guard(inner.Flush);

        private static void Guard(Action write)
        {
            try
            {
                write();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new LlmBuildException(ErrorCodes.StandardOutputClosed,
                    $"Cannot write to standard output ({e.InnerException?.Message ?? e.Message}): it is closed, or the program reading it has exited. " +
                    "Run the command with its output going to a terminal, a file or a program that reads all of it.", null, e);
            }
        }
    }
}
