package MdmWatch::Browser;

# Headless Chromium, driven through the DevTools protocol over a pair of
# pipes (--remote-debugging-pipe): no port is opened.  Chromium reads
# commands from its file descriptor 3 and writes answers and events to
# 4, each a JSON text ended by a NUL byte.

use strict;
use warnings;

use Carp qw(croak);
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use File::Temp qw(tempdir);
use IO::Handle;
use IO::Select;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG _exit);
use Time::HiRes qw(sleep time);

our $VERSION = '1';

=head1 NAME

MdmWatch::Browser - headless Chromium for the tests of the HTML pages

=head1 SYNOPSIS

    my $b = MdmWatch::Browser->new(width => 390, height => 844)
        or plan skip_all => MdmWatch::Browser::missing();
    $b->load("http://127.0.0.1:$port/pairs");
    $b->type('#q', 'SER02');
    my $rows = $b->js('...');
    $b->screenshot('pairs.png');
    $b->quit;

C<new> returns undef when no Chromium is installed (C<CHROMIUM> names
the binary, default C</usr/bin/chromium>).  C<load> loads a page and
waits for its load event; C<type> focuses an element and types text
into it, one key event per character; C<js> returns the value of a
JavaScript expression; C<screenshot> writes the whole page as PNG.
Every wait is bounded (C<timeout>, 20 s).  C<quit> ends Chromium, by
its process id.

=cut

sub binary { $ENV{CHROMIUM} // '/usr/bin/chromium' }

sub missing {
    return 'Chromium is not installed (' . binary()
        . '): apt-get install chromium';
}

sub new {
    my ($class, %o) = @_;
    return undef unless -x binary();

    my $dir = tempdir('mdm-watch-chromium-XXXXXXXX', TMPDIR => 1,
        CLEANUP => 1);

    pipe(my $cmd_r, my $cmd_w) or croak "pipe: $!";
    pipe(my $evt_r, my $evt_w) or croak "pipe: $!";

    my $pid = fork;
    croak "fork: $!" unless defined $pid;

    if ($pid == 0) {
        CORE::open STDOUT, '>', "$dir/chromium.log";
        CORE::open STDERR, '>&', \*STDOUT;
        my ($r, $w) = (POSIX::dup(fileno $cmd_r), POSIX::dup(fileno $evt_w));
        POSIX::dup2($r, 3) // _exit(127);
        POSIX::dup2($w, 4) // _exit(127);
        exec binary(), '--headless', '--no-sandbox', '--disable-gpu',
            '--no-first-run', '--no-default-browser-check',
            '--disable-extensions', '--disable-background-networking',
            '--disable-component-update', '--disable-sync',
            '--remote-debugging-pipe', "--user-data-dir=$dir/profile",
            'about:blank'
            or _exit(127);
    }

    close $cmd_r;
    close $evt_w;
    $cmd_w->autoflush(1);
    $evt_r->blocking(0);

    my $self = bless {
        pid     => $pid,
        dir     => $dir,
        in      => $cmd_w,
        out     => $evt_r,
        buf     => '',
        id      => 0,
        events  => [],
        timeout => $o{timeout} // 20,
        json    => JSON::PP->new->utf8->canonical,
    }, $class;

    my $target = $self->call('Target.createTarget', { url => 'about:blank' });
    my $attach = $self->call('Target.attachToTarget',
        { targetId => $target->{targetId}, flatten => JSON::PP::true });
    $self->{session} = $attach->{sessionId};

    $self->call('Page.enable');
    $self->call('Runtime.enable');
    $self->call('Emulation.setDeviceMetricsOverride', {
        width             => $o{width} // 390,
        height            => $o{height} // 844,
        deviceScaleFactor => $o{scale} // 2,
        mobile            => ($o{width} // 390) < 600
            ? JSON::PP::true : JSON::PP::false,
    });
    return $self;
}

# sends a command and waits for its answer; an error answer dies
sub call {
    my ($self, $method, $params) = @_;
    my $id = ++$self->{id};
    my %msg = (id => $id, method => $method, params => $params // {});
    $msg{sessionId} = $self->{session}
        if $self->{session} && $method !~ /^Target\./;

    my $text = $self->{json}->encode(\%msg) . "\0";
    my $off = 0;
    while ($off < length $text) {
        my $n = syswrite $self->{in}, $text, length($text) - $off, $off;
        croak "write to chromium: $!" unless defined $n;
        $off += $n;
    }

    my $deadline = time + $self->{timeout};
    while (1) {
        my $m = $self->next_message($deadline)
            // croak "chromium did not answer $method in time";
        if (defined $m->{id} && $m->{id} == $id) {
            croak "chromium: $method: $m->{error}{message}" if $m->{error};
            return $m->{result};
        }
        push @{ $self->{events} }, $m if defined $m->{method};
    }
}

sub next_message {
    my ($self, $deadline) = @_;
    my $sel = IO::Select->new($self->{out});

    while ((my $i = index $self->{buf}, "\0") < 0) {
        my $left = $deadline - time;
        return undef if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $self->{out}, $self->{buf}, 1 << 20,
            length $self->{buf};
        if (!defined $n) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            croak "read from chromium: $!";
        }
        croak 'chromium closed its pipe' if $n == 0;
    }

    my $i = index $self->{buf}, "\0";
    my $text = substr $self->{buf}, 0, $i;
    substr($self->{buf}, 0, $i + 1) = '';
    return $self->{json}->decode($text);
}

sub wait_event {
    my ($self, $method) = @_;
    my $deadline = time + $self->{timeout};

    while (1) {
        my @e = @{ $self->{events} };
        for my $k (0 .. $#e) {
            next unless $e[$k]{method} eq $method;
            splice @{ $self->{events} }, 0, $k + 1;
            return $e[$k];
        }
        my $m = $self->next_message($deadline)
            // croak "no $method from chromium in time";
        push @{ $self->{events} }, $m if defined $m->{method};
    }
}

sub load {
    my ($self, $url) = @_;
    $self->{events} = [];
    my $nav = $self->call('Page.navigate', { url => $url });
    croak "chromium could not load $url: $nav->{errorText}"
        if $nav->{errorText};
    $self->wait_event('Page.loadEventFired');
}

sub js {
    my ($self, $expr) = @_;
    my $r = $self->call('Runtime.evaluate',
        { expression => $expr, returnByValue => JSON::PP::true });
    croak "javascript: $r->{exceptionDetails}{text}" if $r->{exceptionDetails};
    return $r->{result}{value};
}

sub type {
    my ($self, $selector, $text) = @_;
    $self->js('document.querySelector(' . JSON::PP->new->allow_nonref
        ->encode($selector) . ').focus()');
    for my $c (split //, $text) {
        $self->call('Input.dispatchKeyEvent',
            { type => 'keyDown', key => $c, text => $c,
              unmodifiedText => $c });
        $self->call('Input.dispatchKeyEvent', { type => 'keyUp', key => $c });
    }
}

sub screenshot {
    my ($self, $file) = @_;
    my $r = $self->call('Page.captureScreenshot',
        { format => 'png', captureBeyondViewport => JSON::PP::true });
    open(my $fh, '>:raw', $file) or croak "$file: $!";
    print {$fh} decode_base64($r->{data});
    close $fh or croak "$file: $!";
}

sub quit {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;

    eval { $self->call('Browser.close') };
    close $self->{in};

    my $deadline = time + 5;
    while (time < $deadline) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub DESTROY {
    my ($self) = @_;
    $self->quit if $self->{pid};
}

1;
