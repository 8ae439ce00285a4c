package MdmWatch::Test;

# The test harness of ngx_mdm_watch_module: each test file gets a private
# folder, free loopback ports, a Redis, the MDM server stand-in and an
# nginx with the module loaded, and talks to them over raw sockets.
# Every process it starts is stopped again, by its process id.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(sha1_hex sha256_hex);
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use File::Basename qw(dirname);
use File::Path qw(remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG _exit);
use Scalar::Util qw(refaddr);
use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message;
use MdmWatch::Pki;

our $VERSION = '1';

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');

our $ENROLL_URI = '/mdm/enroll/watch';
our $CHECKIN_URI = '/mdm/checkin';
our $CHECKIN_TYPE = 'application/x-apple-aspen-mdm-checkin';
our $CMS_TYPE = 'application/pkcs7-signature';
our $MISSING_CODE = 'com.apple.watch.pairing.token.missing';

# the phone that setup enrolls, and the CN of the pki's phone certificate
our $PHONE = '00008110-000A1B2C3D4E5F60';
our $UUID_RE =
    qr/^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/;

# TEST_NGINX_SLOW=N: nginx runs N times slower, as under Valgrind
our $SLOW = $ENV{TEST_NGINX_SLOW} || 1;
croak "TEST_NGINX_SLOW=$SLOW is no factor of at least 1"
    unless $SLOW =~ /^\d+(?:\.\d+)?$/ && $SLOW >= 1;

my %LIVE;

$SIG{PIPE} = 'IGNORE';

# an interrupted test still stops what it started: END blocks run on exit
for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { exit 1 };
}

END {
    my $status = $?;
    $_->stop_all for grep { $_->{owner} == $$ } values %LIVE;
    $? = $status;
}

=head1 NAME

MdmWatch::Test - run nginx with ngx_mdm_watch_module, a Redis and the MDM
server stand-in on loopback, and talk to them

=head1 SYNOPSIS

    use MdmWatch::Test;

    my $t = MdmWatch::Test->new;
    $t->start_redis;
    $t->start_upstream;
    $t->write_config($t->default_http);
    $t->start_nginx;

    my $res = $t->enroll(UDID => $watch);
    my $st = $t->challenge_ok($res, 'a watch without a token is challenged');

    $t->finish;     # stops nginx, checks the error log, done_testing

=head1 CONSTRUCTOR

C<new(%opts)> makes a private folder (kept when TEST_NGINX_LEAVE is set),
picks free loopback ports for nginx, Redis and the stand-in, finds or
makes the test PKI and writes a random 48-byte secret to C<secret>.

=cut

sub new {
    my ($class, %opts) = @_;

    my $dir = tempdir('mdm-watch-test-XXXXXXXX', TMPDIR => 1,
        CLEANUP => !$ENV{TEST_NGINX_LEAVE});

    # nginx workers drop root privileges and must reach the temp paths
    chmod 0755, $dir or croak "chmod $dir: $!";

    my $self = bless {
        opts   => \%opts,
        dir    => $dir,
        owner  => $$,
        pids   => {},
        paused => 0,
    }, $class;

    my @ports = free_ports(3);
    @{ $self->{port} }{qw(nginx redis upstream)} = @ports;

    $self->{pki} = shared_pki();
    $self->{secret_file} = "$dir/secret";
    spew($self->{secret_file}, random_bytes(48));
    chmod 0600, $self->{secret_file};

    $LIVE{ refaddr $self } = $self;
    return $self;
}

sub dir { $_[0]{dir} }
sub pki { $_[0]{pki} }
sub secret_file { $_[0]{secret_file} }

sub port {
    my ($self, $name) = @_;
    return $self->{port}{ $name // 'nginx' };
}

sub DESTROY {
    my ($self) = @_;
    return unless $self->{owner} == $$;
    $self->stop_all;
    delete $LIVE{ refaddr $self };
}

=head2 shared_pki

The test certificates are made once per user and version of
MdmWatch::Pki, in a folder under the system temporary folder.  They are
made in a folder of their own and renamed into place, so two tests that
race both end up with one complete set.

=cut

sub shared_pki {
    my $source = $INC{'MdmWatch/Pki.pm'};
    my $version = substr sha1_hex(slurp($source)), 0, 12;
    my $cache = File::Spec->catdir(File::Spec->tmpdir,
        "mdm-watch-test-pki-$<-$version");

    if (!-d $cache) {
        my $staging = tempdir("mdm-watch-test-pki-$<-new-XXXXXXXX",
            TMPDIR => 1);
        MdmWatch::Pki->new(dir => $staging);
        chmod 0755, $staging;

        if (!rename $staging, $cache) {
            remove_tree($staging);
            croak "rename $staging $cache: $!" unless -d $cache;
        }
    }

    # the folder is trusted only if it is ours and nobody else may write
    my @st = lstat $cache;
    croak "$cache is not a folder owned by uid $< and closed to others"
        unless @st && -d _ && $st[4] == $< && !($st[2] & 022);

    return MdmWatch::Pki->new(dir => $cache);
}

=head1 TIME

=head2 slow($seconds)

C<$seconds> stretched by TEST_NGINX_SLOW (a factor, 1 when unset), for
an nginx that runs slower, as under Valgrind: every wait of the harness
for nginx (its start and stop, an answer, a log line) is stretched so.
A test that asserts a time bound of its own scales it with C<slow>, or
skips it while C<$MdmWatch::Test::SLOW> is over 1; without the variable
every bound stays as it is.

=cut

sub slow {
    my $seconds = ref $_[0] ? $_[1] : $_[0];
    return $seconds * $SLOW;
}

=head1 PROCESSES

=head2 start_redis, stop_redis, restart_redis, pause_redis, resume_redis

A C<redis-server> on 127.0.0.1 without persistence (TEST_REDIS_SERVER
overrides the binary).  C<start_redis> waits until it answers PING.
C<pause_redis> stops the process with SIGSTOP, as a Redis that hangs;
C<resume_redis> lets it go on.

=cut

sub start_redis {
    my ($self) = @_;
    return $self->start_redis_args('--appendonly', 'no');
}

sub stop_redis {
    my ($self) = @_;
    $self->{paused} = 0;
    $self->stop_process('redis');
}

sub restart_redis {
    my ($self) = @_;
    $self->stop_redis;
    $self->start_redis;
}

sub pause_redis {
    my ($self) = @_;
    my $pid = $self->{pids}{redis} or croak 'redis is not running';
    kill 'STOP', $pid;
    $self->{paused} = 1;
}

sub resume_redis {
    my ($self) = @_;
    my $pid = $self->{pids}{redis} or croak 'redis is not running';
    kill 'CONT', $pid;
    $self->{paused} = 0;
}

=head2 start_upstream, stop_upstream

The MDM server stand-in, C<t/lib/mdm-standin.pl>, recording every
request it receives in the folder C<upstream>.

=cut

sub start_upstream {
    my ($self) = @_;
    my $port = $self->{port}{upstream};
    my $record = "$self->{dir}/upstream";

    croak 'the stand-in is already running' if $self->{pids}{upstream};
    mkdir $record;

    $self->spawn('upstream', "$self->{dir}/upstream.log", $^X,
        "-I$ROOT/t/lib", "$ROOT/t/lib/mdm-standin.pl",
        '--listen', "127.0.0.1:$port", '--record', $record);

    $self->wait_port('upstream', $port)
        or croak 'the stand-in does not accept connections: '
            . tail("$self->{dir}/upstream.log");
}

sub stop_upstream {
    my ($self) = @_;
    $self->stop_process('upstream');
}

=head2 start_nginx, stop_nginx, nginx_test

C</usr/sbin/nginx> (TEST_NGINX_BINARY overrides) in the foreground with
the configuration of C<write_config>.  C<start_nginx> waits until the
port accepts connections and dies with the end of the error log if
nginx exits instead.  C<stop_nginx> is a fast shutdown (SIGTERM), so the
error log shows what nginx found left open.

C<nginx_test> runs C<nginx -t> on the configuration, with a log of its
own, and returns the exit code and what nginx printed.

=cut

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
}

sub start_nginx {
    my ($self) = @_;
    my $dir = $self->{dir};

    croak 'nginx is already running' if $self->{pids}{nginx};
    croak 'write_config first' unless -f "$dir/nginx.conf";

    $self->spawn('nginx', "$dir/nginx.stderr", nginx_binary(),
        '-p', "$dir/", '-c', "$dir/nginx.conf", '-e', "$dir/error.log",
        '-g', 'daemon off;');

    $self->wait_port('nginx', $self->{port}{nginx})
        or croak "nginx did not start:\n" . tail("$dir/nginx.stderr")
            . tail("$dir/error.log");
}

sub stop_nginx {
    my ($self) = @_;
    $self->stop_process('nginx');
}

sub nginx_test {
    my ($self) = @_;
    my $dir = $self->{dir};
    my $conf = $self->{config} // croak 'write_config first';

    # the failures nginx -t is expected to report stay out of error.log
    $conf =~ s{\Q$dir/error.log\E}{$dir/nginx-t.log}g;
    spew("$dir/nginx-t.conf", $conf);
    unlink "$dir/nginx-t.out";

    $self->spawn('nginx_t', "$dir/nginx-t.out", nginx_binary(),
        '-p', "$dir/", '-c', "$dir/nginx-t.conf", '-e', "$dir/nginx-t.log",
        '-t');

    my $status = $self->reap('nginx_t', 30);
    if (!defined $status) {
        $self->stop_process('nginx_t');
        croak 'nginx -t did not finish within 30 seconds';
    }

    my $code = $status & 127 ? 128 + ($status & 127) : $status >> 8;
    return ($code, slurp("$dir/nginx-t.out"));
}

=head2 stop_all

Stops nginx, the stand-in and Redis, whichever are running.

=cut

sub stop_all {
    my ($self) = @_;
    return unless $self->{owner} == $$;
    $self->stop_process($_) for qw(nginx nginx_t upstream redis);
}

sub spawn {
    my ($self, $name, $log, @cmd) = @_;

    my $pid = fork;
    croak "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or _exit(126);
        open STDERR, '>&', \*STDOUT or _exit(126);
        { exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        _exit(127);
    }

    $self->{pids}{$name} = $pid;
    return $pid;
}

# true while the process runs; a process that ended is reaped
sub alive {
    my ($self, $name) = @_;
    my $pid = $self->{pids}{$name} or return 0;

    my $r = waitpid $pid, WNOHANG;
    return 1 if $r == 0;

    $self->{status}{$name} = $?;
    delete $self->{pids}{$name};
    return 0;
}

# waits up to $timeout seconds for the process to end; its wait status,
# or undef if it still runs
sub reap {
    my ($self, $name, $timeout) = @_;
    my $deadline = time + slow($timeout);

    while ($self->alive($name)) {
        return undef if time >= $deadline;
        sleep 0.02;
    }
    return $self->{status}{$name} // 0;
}

sub stop_process {
    my ($self, $name) = @_;
    my $pid = $self->{pids}{$name} or return;

    kill 'CONT', $pid if $name eq 'redis' && $self->{paused};
    kill 'TERM', $pid;
    return if defined $self->reap($name, 10);

    # the nginx workers are children of the master: end them by pid too
    kill 'KILL', children_of($pid), $pid;
    $self->reap($name, 5);
}

sub children_of {
    my ($ppid) = @_;
    my @pids;

    opendir my $dh, '/proc' or return;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh> // next;
        push @pids, $pid if $stat =~ /\)\s+\S+\s+(\d+)/ && $1 == $ppid;
    }
    return @pids;
}

sub wait_port {
    my ($self, $name, $port) = @_;
    my $deadline = time + slow(10);

    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $port, Proto => 'tcp', Timeout => 1);
        if ($s) {
            close $s;
            return 1;
        }
        return 0 unless $self->alive($name);
        sleep 0.05;
    }
    return 0;
}

=head1 CONFIGURATION

=head2 write_config($http_body, %opts)

Writes C<nginx.conf>: the module, one worker (C<worker_processes>
overrides), a debug error log, an access log in the format C<mdm_watch>
that shows the module's variables, temp paths in the test folder, and
the given body of the C<http> block.  C<main> adds directives to the main
context.  Placeholders: C<%%REDIS%%>, C<%%UPSTREAM%%>, C<%%PORT%%>,
C<%%SECRET%%>, C<%%CA%%>, C<%%TMP%%>.  TEST_NGINX_MODULE overrides the
module file.

=cut

sub module_file {
    my $file = $ENV{TEST_NGINX_MODULE}
        // "$ROOT/build/ngx_mdm_watch_module.so";
    return -e $file ? abs_path($file) : $file;
}

sub write_config {
    my ($self, $http, %opts) = @_;
    my $dir = $self->{dir};
    my $workers = $opts{worker_processes} // 1;
    my $main = $opts{main} // '';
    my $module = module_file();

    croak "no module at $module: build it first (make)" unless -f $module;

    my $conf = <<"END";
load_module $module;

worker_processes $workers;
error_log $dir/error.log debug;
pid $dir/nginx.pid;
$main

events {
}

http {
    log_format mdm_watch '\$request_method \$request_uri \$status'
                         ' action=\$mdm_watch_action'
                         ' type=\$mdm_watch_message_type'
                         ' udid=\$mdm_watch_udid'
                         ' phone=\$mdm_watch_phone_udid'
                         ' upstream=\$upstream_addr';

    access_log $dir/access.log mdm_watch;

    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

$http
}
END

    $conf = $self->expand($conf);
    $self->{config} = $conf;
    spew("$dir/nginx.conf", $conf);
    return "$dir/nginx.conf";
}

sub expand {
    my ($self, $text) = @_;
    my %value = (
        REDIS    => "127.0.0.1:$self->{port}{redis}",
        UPSTREAM => "127.0.0.1:$self->{port}{upstream}",
        PORT     => $self->{port}{nginx},
        SECRET   => $self->{secret_file},
        CA       => $self->{pki}->ca_file,
        TMP      => $self->{dir},
    );
    $text =~ s/%%(REDIS|UPSTREAM|PORT|SECRET|CA|TMP)%%/$value{$1}/g;
    return $text;
}

=head2 default_http(%opts)

The body of the C<http> block of the README's example.  Options:
C<token_ttl> (10m), C<redis_timeout> (1s), C<verify> (on), C<secret>,
C<trusted_certificate> (undef leaves a directive out), C<http> (more
directives in C<http>), C<server> (more in C<server>), C<enroll> and
C<checkin> (more in those locations), C<locations> (more locations).

=cut

sub default_http {
    my ($self, %o) = @_;

    my %main = (
        mdm_watch_redis               => '%%REDIS%%',
        mdm_watch_redis_timeout       => '1s',
        mdm_watch_secret              => '%%SECRET%%',
        mdm_watch_token_ttl           => '10m',
        mdm_watch_trusted_certificate => '%%CA%%',
        mdm_watch_verify_machine_info => 'on',
    );
    my %alias = (
        redis_timeout       => 'mdm_watch_redis_timeout',
        secret              => 'mdm_watch_secret',
        token_ttl           => 'mdm_watch_token_ttl',
        trusted_certificate => 'mdm_watch_trusted_certificate',
        verify              => 'mdm_watch_verify_machine_info',
        redis               => 'mdm_watch_redis',
    );
    for my $k (keys %alias) {
        $main{ $alias{$k} } = $o{$k} if exists $o{$k};
    }

    my $body = '';
    for my $d (qw(mdm_watch_redis mdm_watch_redis_timeout mdm_watch_secret
                  mdm_watch_token_ttl mdm_watch_trusted_certificate
                  mdm_watch_verify_machine_info))
    {
        next unless defined $main{$d};
        $body .= sprintf "    %-30s %s;\n", $d, $main{$d};
    }

    my $http = $o{http} // '';
    my $server = $o{server} // '';
    my $enroll = $o{enroll} // '';
    my $checkin = $o{checkin} // '';
    my $locations = $o{locations} // '';

    return $body . <<"END";
$http
    upstream mdm {
        server %%UPSTREAM%%;
    }

    server {
        listen 127.0.0.1:%%PORT%%;
$server
        location = /mdm/enroll/watch {
            mdm_watch_enroll;
            proxy_set_header X-Paired-Phone-UDID \$mdm_watch_phone_udid;
            proxy_pass http://mdm;
$enroll
        }

        location = /mdm/checkin {
            mdm_watch_checkin;
            proxy_pass http://mdm;
$checkin
        }

        location / {
            proxy_pass http://mdm;
        }
$locations
    }
END
}

=head2 setup(%opts)

Redis, the stand-in, C<default_http(%opts)> and nginx, in one call;
then the default phone, C<$MdmWatch::Test::PHONE>
(00008110-000A1B2C3D4E5F60), is enrolled: C<enroll_phone> sends its
unsigned TokenUpdate through the check-in location and waits until the
module has recorded it, so that the module answers its GetToken.  The
record has no identity, so the phone's GetToken is answered signed or
not.  C<phone =E<gt> $udid> enrolls another phone instead, C<phone
=E<gt> 0> none; a test of a phone the module does not know uses a UDID
of its own.  The TokenUpdate is the first request the MDM server
receives, and the first line of the access log.

=cut

sub setup {
    my ($self, %o) = @_;
    my $phone = exists $o{phone} ? delete $o{phone} : $PHONE;

    $self->start_redis;
    $self->start_upstream;
    $self->write_config($self->default_http(%o));
    $self->start_nginx;
    $self->enroll_phone_ok($phone) if $phone;
    return $self;
}

=head1 HTTP

=head2 request(%opts)

One HTTP/1.1 request over a new loopback connection, with
C<Connection: close>.  Options: C<method> (GET), C<uri> (/),
C<headers> ([[name, value], ...]; Host is added unless given), C<body>,
C<chunked> with C<chunk_size> (1024), C<delay> seconds between the pieces
sent, C<timeout> (10), C<port>.  Content-Length is sent with a body, and
for POST and PUT.  Returns

    { status, reason, headers => { lower-case name => value },
      header_list => [[name, value], ...], body, raw, elapsed, error }

where C<status> is undef and C<error> says why when no complete answer
came.  C<send_request> and C<read_response> are its two halves, for a
request that waits while others are made.

=cut

sub request {
    my ($self, %o) = @_;
    my $h = $self->send_request(%o);
    return $self->read_response($h, $o{timeout});
}

sub send_request {
    my ($self, %o) = @_;
    my $method = $o{method} // 'GET';
    my $uri = $o{uri} // '/';
    my @headers = @{ $o{headers} // [] };
    my $body = $o{body};
    my $port = $o{port} // $self->{port}{nginx};

    unshift @headers, ['Host', "127.0.0.1:$port"]
        unless grep { lc $_->[0] eq 'host' } @headers;

    my $head = "$method $uri HTTP/1.1\r\n";
    $head .= "$_->[0]: $_->[1]\r\n" for @headers;
    $head .= "Connection: close\r\n";

    my @pieces;
    if ($o{chunked}) {
        my $size = $o{chunk_size} // 1024;
        $head .= "Transfer-Encoding: chunked\r\n\r\n";
        @pieces = ($head);
        my $data = $body // '';
        for (my $i = 0; $i < length $data; $i += $size) {
            my $chunk = substr $data, $i, $size;
            push @pieces, sprintf("%x\r\n", length $chunk) . "$chunk\r\n";
        }
        push @pieces, "0\r\n\r\n";

    } else {
        if (defined $body || $method =~ /^(?:POST|PUT)$/) {
            $body //= '';
            $head .= 'Content-Length: ' . length($body) . "\r\n";
        }
        $head .= "\r\n";
        @pieces = ($head);

        if (defined $body && length $body) {
            my $size = $o{delay} ? ($o{chunk_size} // 1024) : length $body;
            for (my $i = 0; $i < length $body; $i += $size) {
                push @pieces, substr $body, $i, $size;
            }
        }
    }

    return $self->send_raw(\@pieces, port => $port, delay => $o{delay},
        timeout => $o{timeout});
}

sub send_raw {
    my ($self, $pieces, %o) = @_;
    my $port = $o{port} // $self->{port}{nginx};
    my $timeout = slow($o{timeout} // 10);
    my $start = time;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 5)
        or croak "connect to 127.0.0.1:$port: $!";
    $s->blocking(0);
    binmode $s;

    my $h = { sock => $s, start => $start, deadline => $start + $timeout };

    for my $i (0 .. $#$pieces) {
        sleep $o{delay} if $o{delay} && $i > 0;
        if (!write_all($s, $pieces->[$i], $h->{deadline})) {
            $h->{write_error} = $! ? "$!" : 'timeout';
            last;
        }
    }
    return $h;
}

sub write_all {
    my ($s, $data, $deadline) = @_;
    my $sel = IO::Select->new($s);
    my $off = 0;

    while ($off < length $data) {
        my $left = $deadline - time;
        if ($left <= 0) {
            $! = 0;
            return 0;
        }
        next unless $sel->can_write($left);
        my $n = syswrite $s, $data, length($data) - $off, $off;
        if (!defined $n) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            return 0;
        }
        $off += $n;
    }
    return 1;
}

sub read_response {
    my ($self, $h, $timeout) = @_;
    my $s = $h->{sock};
    my $deadline = defined $timeout ? $h->{start} + slow($timeout)
                                    : $h->{deadline};
    my $sel = IO::Select->new($s);
    my $raw = '';
    my $error;

    while (1) {
        my $left = $deadline - time;
        if ($left <= 0) {
            $error = 'timeout';
            last;
        }
        next unless $sel->can_read($left);
        my $n = sysread $s, $raw, 65536, length $raw;
        if (!defined $n) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            $error = "read: $!";
            last;
        }
        last if $n == 0;
    }
    close $s;

    my $res = parse_response($raw);
    $res->{elapsed} = time - $h->{start};
    $res->{write_error} = $h->{write_error};

    # an answer cut short by the deadline is no answer
    if ($error && (!defined $res->{status} || $res->{error})) {
        $res->{status} = undef;
        $res->{error} = $error;
    }
    return $res;
}

=head2 raw_request($bytes, %opts)

Sends the bytes as they are (C<delay> between the pieces of an array
reference) and returns the answer as C<request> does.

=cut

sub raw_request {
    my ($self, $bytes, %o) = @_;
    my $pieces = ref $bytes ? $bytes : [$bytes];
    my $h = $self->send_raw($pieces, %o);
    return $self->read_response($h, $o{timeout});
}

sub parse_response {
    my ($raw) = @_;
    my $res = { raw => $raw, headers => {}, header_list => [], body => '' };

    # interim answers, such as 100 Continue, come before the real one
    $raw =~ s{^HTTP/\d\.\d 1\d\d[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n}{}
        while $raw =~ m{^HTTP/\d\.\d 1\d\d };

    my $end = index $raw, "\r\n\r\n";
    if ($end < 0) {
        $res->{error} = length $raw ? 'incomplete header' : 'no answer';
        return $res;
    }

    my ($status_line, @lines) = split /\r\n/, substr($raw, 0, $end);
    my $body = substr $raw, $end + 4;

    if ($status_line !~ m{^HTTP/\d\.\d (\d{3})(?: (.*))?$}) {
        $res->{error} = "bad status line: $status_line";
        return $res;
    }
    @$res{qw(status reason)} = ($1, $2 // '');

    for my $line (@lines) {
        my ($name, $value) = $line =~ /^([^:]+):\s*(.*?)\s*$/ or next;
        push @{ $res->{header_list} }, [$name, $value];
        my $k = lc $name;
        $res->{headers}{$k} = exists $res->{headers}{$k}
            ? "$res->{headers}{$k}, $value" : $value;
    }

    my $te = $res->{headers}{'transfer-encoding'} // '';
    if ($te =~ /chunked/i) {
        my ($decoded, $complete) = dechunk($body);
        $body = $decoded;
        $res->{error} = 'incomplete chunked body' unless $complete;

    } elsif (defined(my $len = $res->{headers}{'content-length'})) {
        $res->{error} = 'short body' if length $body < $len;
        $body = substr $body, 0, $len;
    }

    $res->{body} = $body;
    return $res;
}

sub dechunk {
    my ($data) = @_;
    my $out = '';

    while ($data =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
        my $size = hex $1;
        return ($out, 1) if $size == 0;
        return ($out, 0) if length $data < $size + 2;
        $out .= substr $data, 0, $size;
        substr($data, 0, $size + 2) = '';
    }
    return ($out, 0);
}

=head1 THE MDM SERVER STAND-IN

C<upstream_requests> lists what the stand-in received, in order, each as

    { method, uri, headers => [[name, value], ...],
      header => { lower-case name => value }, body, body_length,
      body_sha256, raw }

C<upstream_count> counts them; C<wait_upstream($n)> waits (up to 5 s)
until there are at least C<$n> and returns the list.

=cut

sub upstream_requests {
    my ($self) = @_;
    my $record = "$self->{dir}/upstream";
    my @list;

    opendir my $dh, $record or return;
    my @names = sort grep { /^\d+\.json$/ } readdir $dh;
    closedir $dh;

    for my $name (@names) {
        (my $base = $name) =~ s/\.json$//;
        my $meta = eval { JSON::PP->new->decode(slurp("$record/$name")) }
            or last;    # still being written
        my $raw = -f "$record/$base.req" ? slurp("$record/$base.req") : '';
        my $end = index $raw, "\r\n\r\n";
        my $body = $end < 0 ? '' : substr $raw, $end + 4;

        my %header;
        for my $pair (@{ $meta->{headers} // [] }) {
            my $k = lc $pair->[0];
            $header{$k} = exists $header{$k}
                ? "$header{$k}, $pair->[1]" : $pair->[1];
        }

        push @list, {
            %$meta,
            header => \%header,
            body   => $body,
            raw    => $raw,
        };
    }
    return @list;
}

=head2 passed_ok($upstream_request, %sent)

Asserts that the stand-in received a request as it was sent: C<method>,
C<uri>, C<body> byte for byte, and every header of C<headers> with the
same name, value and order, but for those the proxy owns (Host,
Connection, Content-Length, Transfer-Encoding).

=cut

my %PROXY_OWNS = map { $_ => 1 }
    qw(host connection content-length transfer-encoding);

sub passed_ok {
    my ($self, $got, %sent) = @_;
    my $name = $sent{name} // 'the request reached the MDM server unchanged';
    my @why;

    if (!$got) {
        ok(0, $name) or diag('the MDM server received nothing');
        return 0;
    }

    for my $k (qw(method uri)) {
        next unless defined $sent{$k};
        push @why, "$k $got->{$k}, not $sent{$k}"
            if ($got->{$k} // '') ne $sent{$k};
    }

    if (defined $sent{body}) {
        push @why, sprintf('body of %d bytes (sha256 %s), not %d (%s)',
            length $got->{body}, sha256_hex($got->{body}),
            length $sent{body}, sha256_hex($sent{body}))
            if $got->{body} ne $sent{body}
               || $got->{body_sha256} ne sha256_hex($sent{body});
        my $cl = $got->{header}{'content-length'};
        push @why, 'Content-Length ' . ($cl // 'none')
            if length $sent{body} && ($cl // -1) != length $sent{body};
    }

    my @want = grep { !$PROXY_OWNS{ lc $_->[0] } } @{ $sent{headers} // [] };
    my @have = grep { !$PROXY_OWNS{ lc $_->[0] } } @{ $got->{headers} };
    my $i = 0;
    for my $w (@want) {
        $i++ while $i < @have
            && !($have[$i][0] eq $w->[0] && $have[$i][1] eq $w->[1]);
        if ($i == @have) {
            my $v = length $w->[1] > 60
                ? substr($w->[1], 0, 60) . '...' : $w->[1];
            push @why, "header \"$w->[0]: $v\" missing, changed"
                . ' or out of order';
            $i = 0;
        }
    }

    ok(!@why, $name) or diag(join "\n", @why);
    return !@why;
}

sub upstream_count {
    my ($self) = @_;
    my @list = $self->upstream_requests;
    return scalar @list;
}

sub wait_upstream {
    my ($self, $n) = @_;
    my $deadline = time + slow(5);
    my @list;

    while (1) {
        @list = $self->upstream_requests;
        return @list if @list >= $n || time >= $deadline;
        sleep 0.02;
    }
}

=head1 REDIS

C<redis(@command)> sends one command over a new connection and returns
the reply: a string, an integer, undef for nil, an array reference; an
error reply dies.  C<redis_keys($pattern)> (sorted), C<redis_ttl($key)>,
C<redis_hash($key)> (a hash reference), C<redis_members($key)> (sorted).

=cut

sub redis {
    my ($self, @cmd) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $self->{port}{redis}, Proto => 'tcp', Timeout => 2)
        or die "connect to redis: $!\n";
    binmode $s;

    my $req = '*' . @cmd . "\r\n";
    for my $arg (@cmd) {
        my $bytes = $arg;
        utf8::encode($bytes) if utf8::is_utf8($bytes);
        $req .= '$' . length($bytes) . "\r\n$bytes\r\n";
    }
    $s->blocking(0);
    write_all($s, $req, time + 5) or die "write to redis: $!\n";

    my $reader = { sock => $s, buf => '', deadline => time + 5 };
    my $reply = resp_read($reader);
    close $s;
    return $reply;
}

sub resp_read {
    my ($r) = @_;
    my $line = resp_line($r);
    my ($type, $rest) = (substr($line, 0, 1), substr($line, 1));

    return $rest if $type eq '+';
    die "redis: $rest\n" if $type eq '-';
    return 0 + $rest if $type eq ':';

    if ($type eq '$') {
        return undef if $rest < 0;
        my $data = resp_bytes($r, $rest + 2);
        return substr $data, 0, $rest;
    }

    if ($type eq '*') {
        return undef if $rest < 0;
        return [map { resp_read($r) } 1 .. $rest];
    }

    die "redis: unexpected reply '$line'\n";
}

sub resp_fill {
    my ($r) = @_;
    my $sel = IO::Select->new($r->{sock});

    while (1) {
        my $left = $r->{deadline} - time;
        die "redis: no reply in time\n" if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $r->{sock}, $r->{buf}, 65536, length $r->{buf};
        if (!defined $n) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            die "redis: read: $!\n";
        }
        die "redis: connection closed\n" if $n == 0;
        return;
    }
}

sub resp_line {
    my ($r) = @_;
    my $i;
    resp_fill($r) while ($i = index $r->{buf}, "\r\n") < 0;
    my $line = substr $r->{buf}, 0, $i;
    substr($r->{buf}, 0, $i + 2) = '';
    return $line;
}

sub resp_bytes {
    my ($r, $n) = @_;
    resp_fill($r) while length $r->{buf} < $n;
    my $data = substr $r->{buf}, 0, $n;
    substr($r->{buf}, 0, $n) = '';
    return $data;
}

sub redis_keys {
    my ($self, $pattern) = @_;
    return sort @{ $self->redis('KEYS', $pattern // '*') };
}

sub redis_ttl {
    my ($self, $key) = @_;
    return $self->redis('TTL', $key);
}

sub redis_hash {
    my ($self, $key) = @_;
    return { @{ $self->redis('HGETALL', $key) } };
}

sub redis_members {
    my ($self, $key) = @_;
    return sort @{ $self->redis('SMEMBERS', $key) };
}

=head1 LOGS

C<error_log> and C<access_log_text> return the logs.  C<access_log>
returns the access log lines parsed: { method, uri, status, action, type,
udid, phone, upstream }, with "-" for an empty variable; C<count =E<gt> n>
waits (up to 5 s) for n lines, since nginx writes a line after the
answer has gone.

C<access_entry($request_uri)> waits for the line of that request.

C<log_like(qr/.../, $name, $mark)> and C<log_unlike> are assertions on
the error log, or on what was written after C<$mark = log_mark>;
C<log_like> waits up to 2 s for the line.  C<no_alerts> asserts
that the error log has no C<[alert]>, C<[crit]> or C<[emerg]> line.

=cut

sub error_log {
    my ($self) = @_;
    my $file = "$self->{dir}/error.log";
    return -f $file ? slurp($file) : '';
}

sub access_log_text {
    my ($self) = @_;
    my $file = "$self->{dir}/access.log";
    return -f $file ? slurp($file) : '';
}

sub access_log {
    my ($self, %o) = @_;
    my $deadline = time + slow(5);
    my @entries;

    while (1) {
        @entries = ();
        for my $line (split /\n/, $self->access_log_text) {
            my %e;
            @e{qw(method uri status)} = split / /, $line;
            $e{$1} = $2
                while $line =~ / (action|type|udid|phone|upstream)=(\S*)/g;
            $e{line} = $line;
            push @entries, \%e;
        }
        return @entries if !$o{count} || @entries >= $o{count}
            || time >= $deadline;
        sleep 0.02;
    }
}

sub access_entry {
    my ($self, $uri) = @_;
    my $deadline = time + slow(5);

    while (1) {
        my ($e) = grep { ($_->{uri} // '') eq $uri } $self->access_log;
        return $e if $e || time >= $deadline;
        sleep 0.02;
    }
}

sub log_mark {
    my ($self) = @_;
    return length $self->error_log;
}

sub log_like {
    my ($self, $re, $name, $mark) = @_;
    my $deadline = time + slow(2);
    my $log;

    while (1) {
        $log = substr $self->error_log, $mark // 0;
        last if $log =~ $re || time >= $deadline;
        sleep 0.02;
    }
    return ok($log =~ $re, $name) || diag("no line matches $re in:\n"
        . join "\n", last_lines(20, grep { !/\[debug\]/ } split /\n/, $log));
}

sub log_unlike {
    my ($self, $re, $name, $mark) = @_;
    my @lines = grep { $_ =~ $re } split /\n/,
        substr($self->error_log, $mark // 0);
    return ok(!@lines, $name) || diag(join "\n", last_lines(10, @lines));
}

sub last_lines {
    my ($n, @lines) = @_;
    return @lines > $n ? @lines[-$n .. -1] : @lines;
}

sub alerts {
    my ($self) = @_;
    return grep { /\[(?:alert|crit|emerg)\]/ } split /\n/, $self->error_log;
}

sub no_alerts {
    my ($self, $name) = @_;
    my @bad = $self->alerts;
    ok(!@bad, $name // 'the error log has no alert, crit or emerg line')
        or diag(join "\n", last_lines(10, @bad));
}

=head2 finish

Stops nginx, so that what it reports on exit is in the log, asserts
C<no_alerts> and calls C<done_testing>.  When a test failed, it tells
where the test folder is, if kept, and with TEST_NGINX_VERBOSE shows the
end of the error log without its debug lines.

=cut

sub finish {
    my ($self) = @_;
    $self->stop_nginx;
    $self->no_alerts;
    done_testing();

    if (!Test::More->builder->is_passing) {
        diag($ENV{TEST_NGINX_LEAVE}
            ? "the test folder is kept: $self->{dir}"
            : 'set TEST_NGINX_LEAVE=1 to keep the test folder');
        diag("the end of the error log, without debug lines:\n"
            . join "\n", last_lines(30, grep { !/\[debug\]/ }
                split /\n/, $self->error_log))
            if $ENV{TEST_NGINX_VERBOSE};
    }
}

=head1 THE WATCH AND THE PHONE

=head2 machine_info_body(%opts)

Signed machine info: the fields of C<MdmWatch::Message::machine_info>,
plus C<signer> (watch), C<form> (der), C<binary> (a binary plist inside).

=head2 enroll(%opts)

POSTs signed machine info to the enrollment location, with
C<Content-Type: application/pkcs7-signature>.  C<body> sends given bytes
instead; the request options of C<request> apply.

=cut

my @REQUEST_OPTS =
    qw(method uri headers chunked chunk_size delay timeout port);

sub split_request_opts {
    my (%o) = @_;
    my %req;
    for my $k (@REQUEST_OPTS) {
        $req{$k} = delete $o{$k} if exists $o{$k};
    }
    return (\%req, \%o);
}

sub machine_info_body {
    my ($self, %o) = @_;
    my $signer = delete $o{signer} // 'watch';
    my $form = delete $o{form} // 'der';
    my $binary = delete $o{binary};

    my $content = MdmWatch::Message::machine_info(%o);
    $content = MdmWatch::Message::to_binary($content) if $binary;

    return MdmWatch::Message::sign($content, signer => $signer,
        pki => $self->{pki}, form => $form);
}

sub enroll {
    my ($self, %o) = @_;
    my ($req, $fields) = split_request_opts(%o);
    my $body = exists $fields->{body} ? $fields->{body}
                                      : $self->machine_info_body(%$fields);

    return $self->request(
        method  => 'POST',
        uri     => $ENROLL_URI,
        %$req,
        headers => [['Content-Type', $CMS_TYPE], @{ $req->{headers} // [] }],
        body    => $body,
    );
}

=head2 checkin($body, %opts)

PUTs a check-in message to the check-in location with
C<Content-Type: application/x-apple-aspen-mdm-checkin> (C<content_type>
changes it, undef leaves it out).

=head2 get_token_response(%opts), get_token(%opts)

The phone's GetToken (the fields of C<MdmWatch::Message::get_token>);
C<get_token> returns the TokenData bytes of a 200 answer, or undef.
C<signer> (a certificate name of the pki, such as C<phone>) sends it
with an C<Mdm-Signature> of that device.

=cut

sub checkin {
    my ($self, $body, %o) = @_;
    my $type = exists $o{content_type} ? delete $o{content_type}
                                       : $CHECKIN_TYPE;
    my ($req) = split_request_opts(%o);
    my @ct = defined $type ? (['Content-Type', $type]) : ();

    return $self->request(
        method  => 'PUT',
        uri     => $CHECKIN_URI,
        %$req,
        headers => [@ct, @{ $req->{headers} // [] }],
        body    => $body,
    );
}

sub get_token_response {
    my ($self, %o) = @_;
    my ($req, $fields) = split_request_opts(%o);
    my $signer = delete $fields->{signer};
    my $body = MdmWatch::Message::get_token(%$fields);
    my @signature = defined $signer
        ? (['Mdm-Signature', $self->mdm_signature($body, $signer)]) : ();

    return $self->checkin($body, %$req,
        headers => [@signature, @{ $req->{headers} // [] }]);
}

sub get_token {
    my ($self, %o) = @_;
    my $res = $self->get_token_response(%o);
    return undef unless ($res->{status} // 0) == 200;
    return MdmWatch::Message::parse_token_data($res->{body});
}

=head2 challenge_token($response), challenge(%opts), challenge_ok($res, $name)

C<challenge_token> is the security token of a 403 challenge, or undef if
the answer is no challenge.  C<challenge> enrolls (C<enroll(%opts)>) and
returns that.  C<challenge_ok> asserts that an answer is a challenge: a
403 with a JSON body of the code com.apple.watch.pairing.token.missing
and a new upper-case UUID as security token; it returns the token.

=cut

sub challenge_token {
    my $res = ref $_[0] eq __PACKAGE__ ? $_[1] : $_[0];
    return undef unless ($res->{status} // 0) == 403;
    my $json = eval { JSON::PP->new->decode($res->{body}) } or return undef;
    return undef unless ref $json eq 'HASH'
        && ($json->{code} // '') eq $MISSING_CODE
        && ref $json->{details} eq 'HASH';
    return $json->{details}{'security-token'};
}

sub challenge {
    my ($self, %o) = @_;
    return challenge_token($self->enroll(%o));
}

sub challenge_ok {
    my ($self, $res, $name) = @_;
    my @why;

    my $json;
    if (($res->{status} // 0) != 403) {
        push @why, 'status ' . ($res->{status} // 'none') . ', not 403';
    }
    if (($res->{headers}{'content-type'} // '') !~ m{^application/json\b}) {
        push @why, 'Content-Type '
            . ($res->{headers}{'content-type'} // 'none');
    }
    $json = eval { JSON::PP->new->decode($res->{body}) };
    if (ref $json ne 'HASH') {
        push @why, 'the body is no JSON object';
    } else {
        push @why, 'code ' . ($json->{code} // 'none')
            if ($json->{code} // '') ne $MISSING_CODE;
        my $st = ref $json->{details} eq 'HASH'
            ? $json->{details}{'security-token'} : undef;
        push @why, 'security-token ' . ($st // 'none')
            . ' is no upper-case UUID'
            unless defined $st && $st =~ $UUID_RE;
    }

    ok(!@why, $name) or diag(join('; ', @why) . "\n" . describe($res));
    return @why ? undef : $json->{details}{'security-token'};
}

=head2 describe($response)

A short text of an answer for diagnostics.

=cut

sub describe {
    my ($res) = @_;
    my $body = $res->{body} // '';
    $body = substr($body, 0, 300) . '...' if length $body > 300;
    $body =~ s/([^\x20-\x7e\n])/sprintf '\\x%02x', ord $1/ge;
    return sprintf "status %s%s\n%s\n%s",
        $res->{status} // 'none',
        $res->{error} ? " ($res->{error})" : '',
        join("\n", map { "$_->[0]: $_->[1]" } @{ $res->{header_list} // [] }),
        $body;
}

=head1 ENROLLED DEVICES

The module records a device whose Authenticate or TokenUpdate the MDM
server accepted in the hash C<mdm_watch:device:E<lt>UDIDE<gt>>, after
the answer has gone: a test waits for it, within a bound.

=head2 mdm_signature($body, $signer, %opts)

The C<Mdm-Signature> header value of C<$body> signed by the pki's
certificate C<$signer> (C<phone>, C<other_phone>), by
C<MdmWatch::Message::mdm_signature> with C<%opts>.

=head2 device_key($udid), device_record($udid)

The key of a device's record, UDID in upper case, and the record as a
hash reference (empty when there is none).

=head2 wait_device($udid, $condition, $seconds)

Polls the record of C<$udid> (every 20 ms, up to C<$seconds>, 5 by
default, stretched by C<slow>) until C<$condition>, given the record,
holds; by default, until there is a record.  Returns the record then,
or undef.

=head2 enroll_phone(%opts), enroll_phone_ok($udid)

C<enroll_phone> sends a phone's check-in through the check-in location
and waits until the module has recorded the device as sent: C<udid>
(C<$PHONE>), C<message> (C<TokenUpdate> or C<Authenticate>), C<signer>
(a certificate name of the pki: the check-in carries its
C<Mdm-Signature>; none by default), C<wait> (0: do not wait), and the
request options of C<request>.  It returns the answer, with C<body_sent>,
C<device> (the record, once it holds the message, the UDID and the
identity expected) and C<recorded> (true then).  It waits only for a 2xx
answer.  C<enroll_phone_ok> enrolls a phone unsigned and dies if the
module does not record it.

=head2 flush_redis(%opts)

FLUSHALL, then enrolls the default phone again, as C<setup> did
(C<phone> as for C<setup>).

=head2 registry_barrier

Sends a TokenUpdate of a UDID of its own, waits until the module has
recorded it and deletes the record: whatever the worker was to record
for requests answered before then has reached Redis, since the worker
sends its commands in order on its one connection (a test runs one
worker).  A test asserts that something was not recorded after it.
The barrier's TokenUpdate reaches the MDM server.  Returns true when
the barrier's own record came.

=cut

sub mdm_signature {
    my ($self, $body, $signer, %o) = @_;
    return MdmWatch::Message::mdm_signature($body, signer => $signer,
        pki => $self->{pki}, %o);
}

sub device_key {
    my $udid = ref $_[0] ? $_[1] : $_[0];
    return 'mdm_watch:device:' . uc $udid;
}

sub device_record {
    my ($self, $udid) = @_;
    return $self->redis_hash(device_key($udid));
}

sub wait_device {
    my ($self, $udid, $cond, $seconds) = @_;
    my $deadline = time + slow($seconds // 5);

    $cond //= sub { 1 };
    while (1) {
        my $record = $self->device_record($udid);
        return $record if %$record && $cond->($record);
        return undef if time >= $deadline;
        sleep 0.02;
    }
}

sub enroll_phone {
    my ($self, %o) = @_;
    my $udid = delete $o{udid} // $PHONE;
    my $message = delete $o{message} // 'TokenUpdate';
    my $signer = delete $o{signer};
    my $wait = exists $o{wait} ? delete $o{wait} : 1;
    my ($req) = split_request_opts(%o);

    my $body;
    if ($message eq 'TokenUpdate') {
        $body = MdmWatch::Message::token_update(udid => $udid);
    } elsif ($message eq 'Authenticate') {
        $body = MdmWatch::Message::authenticate(udid => $udid,
            product => 'iPhone15,2', serial => 'PHONESERIAL1',
            os_version => '17.0', build_version => '21A329',
            device_name => 'iPhone', model => 'MQ0T3',
            model_name => 'iPhone');
    } else {
        croak "enroll_phone: no $message: TokenUpdate or Authenticate";
    }
    my @signature = defined $signer
        ? (['Mdm-Signature', $self->mdm_signature($body, $signer)]) : ();

    my $res = $self->checkin($body, %$req,
        headers => [@signature, @{ $req->{headers} // [] }]);
    $res->{body_sent} = $body;
    return $res unless $wait && ($res->{status} // 0) =~ /^2/;

    my %want = (
        udid            => uc $udid,
        message         => $message,
        identity        => defined $signer
                           ? $self->{pki}->identity($signer) : '',
        identity_source => defined $signer ? 'mdm-signature' : 'none',
    );
    $res->{device} = $self->wait_device($udid, sub {
        my ($d) = @_;
        return !grep { ($d->{$_} // '') ne $want{$_} } keys %want;
    });
    $res->{recorded} = defined $res->{device};
    return $res;
}

sub enroll_phone_ok {
    my ($self, $udid) = @_;
    my $res = $self->enroll_phone(udid => $udid);
    croak "the module did not record the phone $udid after its TokenUpdate:"
        . ' ' . describe($res) . "\nrecord: "
        . join(', ', %{ $self->device_record($udid) })
        unless $res->{recorded};
    return $res;
}

sub flush_redis {
    my ($self, %o) = @_;
    my $phone = exists $o{phone} ? $o{phone} : $PHONE;

    $self->redis('FLUSHALL');
    $self->enroll_phone_ok($phone) if $phone;
}

my $barriers = 0;

sub registry_barrier {
    my ($self) = @_;
    my $udid = sprintf 'BARRIER-%d-%d', $$, ++$barriers;

    my $res = $self->checkin(MdmWatch::Message::token_update(udid => $udid));
    my $came = ($res->{status} // 0) =~ /^2/
        && defined $self->wait_device($udid);
    $self->redis('DEL', device_key($udid));
    return $came;
}

=head1 TLS

=head2 tls_server_directives($port, %opts)

The directives of C<server> (for C<default_http(server =E<gt> ...)>)
that add a TLS listener on 127.0.0.1:C<$port> with the pki's C<server>
certificate, asking for a client certificate: C<verify> is the value of
C<ssl_verify_client> (C<optional>), and the devices' CA,
C<device_ca>, is the one that issues them.

=head2 tls_request(%opts)

One request over TLS by C<openssl s_client>, which verifies the server
certificate against the test CA (the pki's C<server> certificate is
made for 127.0.0.1): C<port> (required), C<client> (a certificate name
of the pki to present as client certificate; none by default),
C<method> (GET), C<uri>, C<headers>, C<body>, C<timeout> (10).  Returns
the answer as C<request> does, with C<tls_log>, what s_client wrote to
stderr.

=cut

sub tls_server_directives {
    my ($self, $port, %o) = @_;
    my $pki = $self->{pki};

    return join '', map { "        $_;\n" }
        "listen 127.0.0.1:$port ssl",
        'ssl_certificate ' . $pki->cert('server'),
        'ssl_certificate_key ' . $pki->key('server'),
        'ssl_verify_client ' . ($o{verify} // 'optional'),
        'ssl_client_certificate ' . $pki->cert('device_ca');
}

sub tls_request {
    my ($self, %o) = @_;
    my $port = $o{port} // croak 'tls_request: port is required';
    my $method = $o{method} // 'GET';
    my $body = $o{body};
    my $n = ++$self->{tls_requests};
    my $base = "$self->{dir}/tls-$n";

    my $head = "$method " . ($o{uri} // '/') . " HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\n";
    $head .= "$_->[0]: $_->[1]\r\n" for @{ $o{headers} // [] };
    if (defined $body || $method =~ /^(?:POST|PUT)$/) {
        $body //= '';
        $head .= 'Content-Length: ' . length($body) . "\r\n";
    }
    spew("$base.in", "${head}Connection: close\r\n\r\n" . ($body // ''));

    my @cmd = ('timeout', slow($o{timeout} // 10), 'openssl', 's_client',
        '-connect', "127.0.0.1:$port", '-quiet', '-verify_return_error',
        '-CAfile', $self->{pki}->ca_file, '-verify_ip', '127.0.0.1');
    push @cmd, '-cert', $self->{pki}->cert($o{client}),
        '-key', $self->{pki}->key($o{client}) if defined $o{client};

    my $start = time;
    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', "$base.in" or _exit(126);
        open STDOUT, '>', "$base.out" or _exit(126);
        open STDERR, '>', "$base.err" or _exit(126);
        { exec { $cmd[0] } @cmd; }
        _exit(127);
    }
    waitpid $pid, 0;

    my $res = parse_response(slurp("$base.out"));
    $res->{elapsed} = time - $start;
    $res->{tls_log} = slurp("$base.err");
    $res->{status} = undef if $res->{error};
    return $res;
}

=head1 FILES

C<slurp>, C<spew>, C<tail>, C<random_bytes>, C<free_ports>.

=cut

sub slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or croak "open $file: $!";
    local $/;
    my $data = <$fh>;
    return $data // '';
}

sub spew {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or croak "open $file: $!";
    print {$fh} $data or croak "write $file: $!";
    close $fh or croak "close $file: $!";
}

sub tail {
    my ($file, $lines) = @_;
    return "($file is missing)\n" unless -f $file;
    my @all = split /\n/, slurp($file);
    $lines //= 20;
    my $from = @all > $lines ? @all - $lines : 0;
    return join '', map { "$_\n" } @all[$from .. $#all];
}

sub random_bytes {
    my ($n) = @_;
    open my $fh, '<:raw', '/dev/urandom' or croak "open /dev/urandom: $!";
    my $bytes;
    my $got = read $fh, $bytes, $n;
    croak 'short read from /dev/urandom' unless ($got // 0) == $n;
    return $bytes;
}

sub random_uuid {
    my @b = unpack 'C16', random_bytes(16);
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $hex = uc join '', map { sprintf '%02x', $_ } @b;
    return join '-', unpack 'A8 A4 A4 A4 A12', $hex;
}

sub free_ports {
    my ($n) = @_;
    my (@socks, @ports);

    # all held open together, so the ports differ
    for (1 .. $n) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => 0, Proto => 'tcp', Listen => 1, ReuseAddr => 1)
            or croak "bind 127.0.0.1:0: $!";
        push @socks, $s;
        push @ports, $s->sockport;
    }
    close $_ for @socks;
    return @ports;
}

=head1 FAULT TESTS

Helpers of the fault and hostile-input tests (C<t/8*.t>): scripted peers
in the slots of Redis and the MDM server, a snapshot of all of Redis,
and the nginx worker as a process.

=head2 start_fake_redis(@args), start_redis_args(@args), kill_redis

C<start_fake_redis> runs C<t/lib/fake-redis.pl> with the given arguments
(C<--mode ...>) on the Redis port, in the place of Redis: C<stop_redis>
stops it, C<start_redis> can follow on the same port.
C<start_redis_args> is C<start_redis> with more C<redis-server>
arguments, such as persistence.  C<kill_redis> ends Redis with SIGKILL,
as a crash, and reaps it.

=cut

sub start_fake_redis {
    my ($self, @args) = @_;
    my $port = $self->{port}{redis};

    croak 'redis is already running' if $self->{pids}{redis};

    $self->spawn('redis', "$self->{dir}/fake-redis.log", $^X,
        "$ROOT/t/lib/fake-redis.pl", '--listen', "127.0.0.1:$port", @args);

    $self->wait_port('redis', $port)
        or croak 'fake-redis does not accept connections: '
            . tail("$self->{dir}/fake-redis.log");
}

sub start_redis_args {
    my ($self, @args) = @_;
    my $port = $self->{port}{redis};
    my $bin = $ENV{TEST_REDIS_SERVER} // 'redis-server';

    croak 'redis is already running' if $self->{pids}{redis};

    $self->spawn('redis', "$self->{dir}/redis.log", $bin,
        '--bind', '127.0.0.1', '--port', $port, '--save', '',
        '--dir', $self->{dir}, '--daemonize', 'no', @args);

    my $deadline = time + 10;
    while (time < $deadline) {
        my $pong = eval { $self->redis('PING') };
        return 1 if defined $pong && $pong eq 'PONG';
        $self->alive('redis')
            or croak 'redis-server exited: ' . tail("$self->{dir}/redis.log");
        sleep 0.05;
    }
    croak 'redis-server does not answer PING: '
        . tail("$self->{dir}/redis.log");
}

sub kill_redis {
    my ($self) = @_;
    my $pid = $self->{pids}{redis} or croak 'redis is not running';
    kill 'KILL', $pid;
    $self->{paused} = 0;
    defined $self->reap('redis', 5) or croak "redis $pid did not end";
}

=head2 start_fake_mdm(@args), fake_mdm_requests

C<start_fake_mdm> runs C<t/lib/fake-mdm.pl> on the stand-in's port, in
its place (call C<stop_upstream> first, if the stand-in runs).
C<fake_mdm_requests> lists what it received, oldest first, each as
{ method, uri, fault, body_length, body_sha256, phone }.

=cut

sub start_fake_mdm {
    my ($self, @args) = @_;
    my $port = $self->{port}{upstream};

    croak 'the stand-in is already running' if $self->{pids}{upstream};

    $self->spawn('upstream', "$self->{dir}/fake-mdm.log", $^X,
        "$ROOT/t/lib/fake-mdm.pl", '--listen', "127.0.0.1:$port",
        '--record', "$self->{dir}/fake-mdm.requests", @args);

    $self->wait_port('upstream', $port)
        or croak 'fake-mdm does not accept connections: '
            . tail("$self->{dir}/fake-mdm.log");
}

sub fake_mdm_requests {
    my ($self) = @_;
    my $file = "$self->{dir}/fake-mdm.requests";
    return () unless -f $file;

    my @list;
    for my $line (split /\n/, slurp($file)) {
        my %r;
        @r{qw(method uri fault body_length body_sha256 phone)} =
            split / /, $line;
        push @list, \%r;
    }
    return @list;
}

=head2 redis_snapshot, redis_diff($before, $after), redis_unchanged_ok

C<redis_snapshot> is every key of Redis with its type, its value and
whether it has a TTL: { key => "type value ttl|no-ttl" }, the value of a
hash or set written as its sorted members.  C<redis_diff> lists the keys
added, removed or changed between two snapshots, as text.
C<redis_unchanged_ok($before, $name)> asserts that Redis equals the
snapshot.

=cut

sub redis_snapshot {
    my ($self) = @_;
    my %snap;

    for my $key ($self->redis_keys('*')) {
        my $type = $self->redis('TYPE', $key);
        my $value;

        if ($type eq 'string') {
            $value = $self->redis('GET', $key);
        } elsif ($type eq 'hash') {
            my $h = $self->redis_hash($key);
            $value = join ',', map { "$_=$h->{$_}" } sort keys %$h;
        } elsif ($type eq 'set') {
            $value = join ',', $self->redis_members($key);
        } elsif ($type eq 'list') {
            $value = join ',', @{ $self->redis('LRANGE', $key, 0, -1) };
        } else {
            $value = '?';
        }
        next unless defined $value;     # expired meanwhile

        my $ttl = $self->redis('PTTL', $key);
        next if $ttl == -2;
        $snap{$key} = "$type $value " . ($ttl >= 0 ? 'ttl' : 'no-ttl');
    }
    return \%snap;
}

sub redis_diff {
    my ($before, $after) = @_;
    my @diff;

    for my $k (sort keys %$before) {
        if (!exists $after->{$k}) {
            push @diff, "removed $k ($before->{$k})";
        } elsif ($after->{$k} ne $before->{$k}) {
            push @diff, "changed $k: $before->{$k} -> $after->{$k}";
        }
    }
    push @diff, map { "added $_ ($after->{$_})" }
        grep { !exists $before->{$_} } sort keys %$after;
    return @diff;
}

sub redis_unchanged_ok {
    my ($self, $before, $name) = @_;
    my @diff = redis_diff($before, $self->redis_snapshot);
    ok(!@diff, $name) or diag(join "\n", last_lines(10, @diff));
    return !@diff;
}

=head2 master_pid, worker_pids, wait_workers($n), rss_kb($pid)

The nginx master is the process C<start_nginx> started; its workers are
its children.  C<wait_workers> waits (up to 5 s) until there are C<$n>
(1) and returns their pids.  C<rss_kb> is VmRSS of a process in kB, from
C</proc/PID/status>.  C<crashes> lists the "exited on signal" lines of
the error log.

=cut

sub master_pid {
    my ($self) = @_;
    return $self->{pids}{nginx};
}

sub worker_pids {
    my ($self) = @_;
    my $master = $self->{pids}{nginx} or return ();
    return sort { $a <=> $b } children_of($master);
}

sub wait_workers {
    my ($self, $n) = @_;
    my $deadline = time + slow(5);
    my @pids;

    $n //= 1;
    while (1) {
        @pids = $self->worker_pids;
        return @pids if @pids == $n || time >= $deadline;
        sleep 0.02;
    }
}

sub rss_kb {
    my ($pid) = @_;
    my $status = eval { slurp("/proc/$pid/status") } // return undef;
    return $status =~ /^VmRSS:\s+(\d+)\s+kB/m ? $1 : undef;
}

sub crashes {
    my ($self) = @_;
    return grep { /exited on signal/ } split /\n/, $self->error_log;
}

1;
