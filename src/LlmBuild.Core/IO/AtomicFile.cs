using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>
/// Every artifact is written to a temporary file beside its final path and renamed into place, so a reader
/// (or a build killed at any instant) sees either the old file, the new file, or no file — never half a file.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes a file by streaming into a temporary sibling, flushing to disk, then renaming it over <paramref name="path"/>.</summary>
    /// <param name="durable">
    /// Whether the data reaches the disk before the rename (fsync): what makes "old file, new file or no file" hold across
    /// a power loss, not only a killed process, for a file a later build trusts by its timestamp. False only for a file
    /// whose reader checks it and falls back safely when it is empty or missing (the weights' identity sidecar).
    /// </param>
    public static void Write(string path, Action<Stream> write, bool durable = true)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        CreateDirectory(dir);
        string temp = Path.Combine(dir, TemporaryName(Path.GetFileName(full)));
        // Inside ConcurrentCommits.Run a durable file's fsync and rename are handed to its I/O threads (same order: data
        // on disk, then the rename), so many small files wait for the disk together.
        ConcurrentCommits? commits = durable ? ConcurrentCommits.Current : null;
        ThroughTemporary(full, temp, "write", () =>
        {
            WritebackFileStream? stream = new WritebackFileStream(temp, FileMode.CreateNew);
            try
            {
                write(stream);
                if (commits is not null)
                {
                    stream.Flush(flushToDisk: false);
                    commits.Add(full, temp, stream);
                    stream = null;
                    return;
                }
                stream.Flush(flushToDisk: durable);
            }
            finally
            {
                stream?.Dispose();
            }
            File.Move(temp, full, overwrite: true);
        });
    }

    /// <summary>
    /// Changes an existing file in place without ever showing a half-changed file at its path: the file is renamed to a
    /// temporary sibling (the path now has no file), <paramref name="modify"/> changes it there through a read/write
    /// stream, it is flushed to disk and renamed back. Killed in between, the path has no file — so the stage that writes
    /// it reruns and writes it whole — and the temporary is a killed writer's, removed by <see cref="DeleteStaleTemporaries"/>.
    /// For a large file of which only the end changes (an npz's constants after its weights) this writes the end only.
    /// </summary>
    public static void Rewrite(string path, Action<FileStream> modify)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, TemporaryName(Path.GetFileName(full)));
        ThroughTemporary(full, temp, "rewrite", () =>
        {
            File.Move(full, temp);
            using (var stream = new WritebackFileStream(temp, FileMode.Open))
            {
                modify(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        });
    }

    /// <summary>
    /// Runs <paramref name="body"/>, which works on <paramref name="temp"/> and renames it to <paramref name="full"/>; on any
    /// failure the temporary is removed, and an I/O or permission failure becomes a coded error naming the file.
    /// </summary>
    private static void ThroughTemporary(string full, string temp, string verb, Action body)
    {
        try
        {
            body();
        }
        catch (IOException e)
        {
            TryDelete(temp);
            throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot {verb} '{full}': {e.Message}. Check free disk space and permissions.", full, e);
        }
        catch (UnauthorizedAccessException e)
        {
            TryDelete(temp);
            throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot {verb} '{full}': {e.Message}. Check permissions.", full, e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes, bool durable = true)
    {
        byte[] copy = bytes.ToArray();
        Write(path, s => s.Write(copy), durable);
    }

    public static void WriteAllText(string path, string text, bool durable = true) =>
        WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text), durable);

    /// <summary>
    /// Writes only when the content differs from what is on disk, leaving the timestamp alone otherwise, so
    /// MSBuild targets that list the file in their Inputs do not rerun. Returns true when the file was written.
    /// </summary>
    public static bool WriteAllTextIfChanged(string path, string text)
    {
        byte[] bytes = new System.Text.UTF8Encoding(false).GetBytes(text);
        if (File.Exists(path))
        {
            try
            {
                if (File.ReadAllBytes(path).AsSpan().SequenceEqual(bytes)) return false;
            }
            catch (IOException) { /* unreadable: rewrite it */ }
        }
        WriteAllBytes(path, bytes);
        return true;
    }

    /// <summary>
    /// The temporary sibling of <paramref name="fileName"/>: hidden, and naming its writer's process id so a cleanup can
    /// tell a live writer's file from one a killed build left.
    /// </summary>
    internal static string TemporaryName(string fileName) => $".{fileName}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";

    private static readonly System.Text.RegularExpressions.Regex TemporaryPattern =
        new(@"^\..+\.(?<pid>[0-9]+)\.[0-9a-f]{32}\.tmp$", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>
    /// Removes the temporary files in <paramref name="directory"/> whose writer process is gone (a killed build's). A live
    /// writer's temporary — another build of the same project, another stage's task — is left alone.
    /// </summary>
    public static void DeleteStaleTemporaries(string directory)
    {
        if (!Directory.Exists(directory)) return;
        foreach (string f in Directory.EnumerateFiles(directory, ".*.tmp", SearchOption.AllDirectories))
        {
            var m = TemporaryPattern.Match(Path.GetFileName(f));
            if (!m.Success || !int.TryParse(m.Groups["pid"].Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid)) continue;
            if (!Processes.IsAlive(pid)) TryDelete(f);
        }
    }

    /// <summary>Creates a folder (and its parents) or raises LLMB0901 naming it.</summary>
    public static void CreateDirectory(string directory)
    {
        try { Directory.CreateDirectory(directory); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string full = Path.GetFullPath(directory);
            throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot create the folder '{full}': {e.Message.TrimEnd('.')}. Make its parent writable.", full, e);
        }
    }

    /// <summary>
    /// Waits until a file written inside <see cref="ConcurrentCommits.Run"/> is in place (at once outside it): for a
    /// writer whose next file must not reach the disk before this one (the order a build killed between them relies on).
    /// </summary>
    public static void WaitUntilInPlace(string path) => ConcurrentCommits.Current?.WaitFor(Path.GetFullPath(path));

    /// <summary>Deletes a file (nothing when it is missing) or raises LLMB0901 naming it.</summary>
    public static void Delete(string path)
    {
        WaitUntilInPlace(path);
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string full = Path.GetFullPath(path);
            throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot delete '{full}': {e.Message.TrimEnd('.')}. Make its folder writable.", full, e);
        }
    }

    internal static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// The stream artifacts are written through: a file stream that, on Linux, asks the kernel to start writing each
    /// finished 16 MiB back while the writer computes the next (sync_file_range, asynchronous), so the fsync before the
    /// rename finds little left to write instead of the whole file. Elsewhere, or when the call is refused, a plain stream.
    /// </summary>
    private sealed class WritebackFileStream(string path, FileMode mode)
        : FileStream(path, mode, FileAccess.ReadWrite, FileShare.None, 1 << 16)
    {
        private const long Step = 16L << 20;
        private const uint SyncFileRangeWrite = 2;
        private long _started;
        private bool _refused = !OperatingSystem.IsLinux();

        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
        private static extern int SyncFileRange(int fd, long offset, long count, uint flags);

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            base.Write(buffer);
            StartWriteback();
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            base.Write(buffer, offset, count);
            StartWriteback();
        }

        private void StartWriteback()
        {
            if (_refused) return;
            long end = Position - Position % Step;
            if (end - _started < Step) return;
            try
            {
                _refused = SyncFileRange((int)SafeFileHandle.DangerousGetHandle(), _started, end - _started, SyncFileRangeWrite) != 0;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                _refused = true; // only a head start for the fsync: without it the fsync writes everything
            }
            _started = end;
        }
    }
}
