using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>
/// Every artifact is written to a temporary file beside its final path and renamed into place, so a reader
/// (or a build killed at any instant) sees either the old file, the new file, or no file — never half a file.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes a file by streaming into a temporary sibling, flushing to disk, then renaming it over <paramref name="path"/>.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (IOException e)
        {
            TryDelete(temp);
            throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot write '{full}': {e.Message}. Check free disk space and permissions.", full, e);
        }
        catch (UnauthorizedAccessException e)
        {
            TryDelete(temp);
            throw new LlmBuildException(ErrorCodes.WriteFailed, $"Cannot write '{full}': {e.Message}. Check permissions.", full, e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        byte[] copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }

    public static void WriteAllText(string path, string text) =>
        WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text));

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

    /// <summary>Removes temporary files left by a killed writer in <paramref name="directory"/>.</summary>
    public static void DeleteStaleTemporaries(string directory)
    {
        if (!Directory.Exists(directory)) return;
        foreach (string f in Directory.EnumerateFiles(directory, ".*.tmp", SearchOption.AllDirectories)) TryDelete(f);
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
