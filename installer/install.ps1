<#
.SYNOPSIS
One command on Windows: set up the daemon's environment, install the GIMP 3 plug-in, and (with -Demo) start
the daemon and fill a bundled photo on the OpenCV engine, which needs no GPU and no download.

.DESCRIPTION
    powershell -ExecutionPolicy Bypass -File installer\install.ps1 [-Demo] [-WithDiffusers [-Torch BUILD]]
        [-Autostart] [-InstallDir DIR] [-- INSTALLER-ARGS...]

    -Demo           start the daemon (no tray icon) unless one already answers, and write demo.png and
                    demo-before-after.png in the current folder
    -WithDiffusers  also install torch + diffusers for the generative engines (several GB), torch in the
                    build for this machine (`gimp-inpaint-install env` prints which and why)
    -Torch BUILD    auto (default: CUDA by the NVIDIA driver, else CPU), cpu or cuda
    -Autostart      start the daemon at every login (a script in the Startup folder, run with pythonw)
    -InstallDir DIR where the virtual environment lives (default: $env:GIMP_INPAINT_HOME or
                    %LOCALAPPDATA%\gimp-inpaint)
    INSTALLER-ARGS  passed to `python -m gimp_inpaint.installer install` (e.g. --gimp-version 3.2,
                    --no-shortcut); a --config-dir among them is also given to the demo's daemon and client

The same steps as installer/install.sh: a venv, `pip install -c installer\requirements\lock.txt`, the torch choice,
the plug-in into every GIMP 3 configuration under %APPDATA%\GIMP. Python 3.11+ is found as $env:PYTHON,
else the `py -3` launcher, else `python`. Runs on Windows PowerShell 5.1 and PowerShell 7.
#>
[CmdletBinding()]
param(
    [switch]$Demo,
    [switch]$WithDiffusers,
    [ValidateSet("auto", "cpu", "cuda", "rocm", "mps")][string]$Torch = "auto",
    [switch]$Autostart,
    [string]$InstallDir = $(if ($env:GIMP_INPAINT_HOME) { $env:GIMP_INPAINT_HOME } else { Join-Path $env:LOCALAPPDATA "gimp-inpaint" }),
    [Parameter(ValueFromRemainingArguments = $true)][string[]]$InstallerArgs = @()
)
$ErrorActionPreference = "Stop"
$repo = Split-Path -Parent $PSScriptRoot

function Invoke-Checked([string]$Program, [string[]]$Arguments) {
    & $Program @Arguments
    if ($LASTEXITCODE -ne 0) { throw "failed ($LASTEXITCODE): $Program $($Arguments -join ' ')" }
}

function Format-Argument([string]$Word) {
    # Start-Process joins -ArgumentList with spaces and quotes nothing (Windows PowerShell 5.1)
    if ($Word -match '[\s"]') { return '"' + ($Word -replace '"', '\"') + '"' } else { return $Word }
}

if ($env:PYTHON) { $python = $env:PYTHON; $pythonArgs = @() }
elseif (Get-Command py -ErrorAction SilentlyContinue) { $python = "py"; $pythonArgs = @("-3") }
else { $python = "python"; $pythonArgs = @() }
& $python @pythonArgs -c "import sys; sys.exit(sys.version_info < (3, 11))"
if ($LASTEXITCODE -ne 0) { throw "gimp-inpaint needs Python 3.11 or newer for its daemon (tried: $python $pythonArgs)" }

$venv = Join-Path $InstallDir "venv"
$venvPython = Join-Path $venv "Scripts\python.exe"
Write-Host "==> virtual environment: $venv"
Invoke-Checked $python ($pythonArgs + @("-m", "venv", $venv))
Invoke-Checked $venvPython @("-m", "pip", "install", "--quiet", "--disable-pip-version-check",
    "-c", (Join-Path $repo "installer\requirements\lock.txt"), $repo)
if ($WithDiffusers) {
    Write-Host "==> torch and diffusers"
    Invoke-Checked $venvPython @("-m", "gimp_inpaint.installer", "env", "--with-diffusers", "--torch", $Torch,
        "--python", $venvPython, "--source", $repo)
}

Write-Host "==> GIMP 3 plug-in"
$installArgs = @("-m", "gimp_inpaint.installer", "install")
if ($Autostart) { $installArgs += "--autostart" }
Invoke-Checked $venvPython ($installArgs + $InstallerArgs)

if ($Demo) {
    $configArgs = @()  # the installer's --config-dir, if given, for the daemon and the client too
    for ($i = 0; $i -lt $InstallerArgs.Count; $i++) {
        if ($InstallerArgs[$i] -eq "--config-dir" -and $i + 1 -lt $InstallerArgs.Count) {
            $configArgs = @("--config-dir", $InstallerArgs[$i + 1])
        } elseif ($InstallerArgs[$i] -like "--config-dir=*") {
            $configArgs = @($InstallerArgs[$i])
        }
    }
    $client = Join-Path $venv "Scripts\gimp-inpaint.exe"
    $daemon = $null
    $ErrorActionPreference = "Continue"  # 5.1 turns a redirected native stderr line into a terminating error
    & $client status @configArgs *> $null
    $answered = $LASTEXITCODE -eq 0
    $ErrorActionPreference = "Stop"
    if ($answered) {
        Write-Host "==> a gimp-inpaint daemon already answers: using it"
    } else {
        $log = Join-Path $InstallDir "daemon-demo.out"
        Write-Host "==> starting the daemon (log: $log, $log.err)"
        $daemonArgs = (@("--no-tray") + $configArgs | ForEach-Object { Format-Argument $_ }) -join " "
        $daemon = Start-Process -FilePath (Join-Path $venv "Scripts\gimp-inpaint-daemon.exe") -ArgumentList $daemonArgs `
            -RedirectStandardOutput $log -RedirectStandardError "$log.err" -WindowStyle Hidden -PassThru
        $listening = $false
        for ($try = 0; $try -lt 100 -and -not $listening; $try++) {
            Start-Sleep -Milliseconds 200
            $listening = (Test-Path $log) -and (Select-String -Path $log -Pattern "listening on" -Quiet)
            if (-not $listening -and $daemon.HasExited) {
                Get-Content "$log.err" -ErrorAction SilentlyContinue | Write-Host
                throw "the daemon did not start"
            }
        }
        if (-not $listening) { throw "the daemon did not start in 20 s (see $log.err)" }
    }
    Write-Host "==> demo fill on the OpenCV engine"
    Invoke-Checked $client (@("demo", "-o", (Join-Path $PWD "demo.png")) + $configArgs)
    if ($daemon) {
        Write-Host ("The daemon keeps running (process $($daemon.Id)) for GIMP: Filters > Generative > " +
            "Generative Fill... ; stop it with: Stop-Process -Id $($daemon.Id)")
    }
}
