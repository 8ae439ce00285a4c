#!/usr/bin/perl

# simulator.pl - plays a supervised iPhone and its Apple Watch pairing
# through nginx and ngx_mdm_watch_module: the phone checks in, signed,
# and the module learns it; the watch is challenged, the phone asks for
# a pairing token, the watch enrolls with it, and the token cannot be
# used twice.  Speaks raw HTTP/1.1 over loopback.

use strict;
use warnings;

use File::Basename qw(dirname);
use lib dirname(__FILE__) . '/../t/lib';

use Getopt::Long qw(GetOptions);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);

use MdmWatch::Message qw(machine_info sign get_token parse_token_data
    authenticate token_update mdm_signature);
use MdmWatch::Pki;

=head1 NAME

simulator.pl - an iPhone and its watch going through watch pairing

=head1 SYNOPSIS

    perl demo/simulator.pl --nginx 127.0.0.1:PORT --pki DIR \
        [--redis 127.0.0.1:PORT] [--phone UDID] [--watch UDID]

=head1 DESCRIPTION

Runs eight steps and prints one line for each; on the first unexpected
answer it prints what it expected and what came, and exits 1.  Exit 0
means every step passed.  The phone first checks in as an enrolled
phone does, Authenticate and TokenUpdate, each signed with
C<Mdm-Signature> by its identity certificate, and the module learns it
from the MDM server's answer; then the watch pairs, and the phone's
GetToken is signed the same way.  The certificates come from
MdmWatch::Pki in C<--pki> (nginx must trust its C<ca>; the phone's
identity certificate is C<phone>).  Without C<--redis> the steps that
show what the module recorded are skipped.

The HTTP client (C<http_request>) can be used on its own: loading this
file with C<do> or C<require> defines it without running the steps.

=cut

my $ENROLL = '/mdm/enroll/watch';
my $CHECKIN = '/mdm/checkin';
my $CMS_TYPE = 'application/pkcs7-signature';
my $CHECKIN_TYPE = 'application/x-apple-aspen-mdm-checkin';
my $PROFILE_TYPE = 'application/x-apple-aspen-config';
my $MISSING = 'com.apple.watch.pairing.token.missing';
my $UUID = qr/^[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$/;

my $CONNECT_TIMEOUT = 5;
my $RESPONSE_TIMEOUT = 15;
my $MAX_RESPONSE = 64 * 1024 * 1024;

main() unless caller;

sub main {
    my %opt = (
        phone => '00008110-000A1B2C3D4E5F60',
        watch => '00008301-0A1B2C3D4E5F6071',
    );
    GetOptions(\%opt, 'nginx=s', 'pki=s', 'redis=s', 'phone=s', 'watch=s')
        && $opt{nginx} && $opt{pki} && !@ARGV
        or usage();

    $| = 1;
    my $pki = MdmWatch::Pki->new(dir => $opt{pki}, udid => $opt{watch},
        phone_udid => $opt{phone});
    my $s = { %opt, pki => $pki };

    step1_authenticate($s);
    step2_token_update($s);
    step3_phone_learned($s);
    step4_challenge($s);
    step5_get_token($s);
    step6_enroll($s);
    step7_show_pair($s);
    step8_replay($s);

    print "all steps passed: the watch is paired with the phone\n";
    exit 0;
}

sub usage {
    print STDERR "usage: simulator.pl --nginx HOST:PORT --pki DIR"
        . " [--redis HOST:PORT] [--phone UDID] [--watch UDID]\n";
    exit 2;
}


# the steps

sub step1_authenticate {
    my ($s) = @_;
    my $line = "[1] phone  PUT  $CHECKIN (Authenticate, Mdm-Signature)";

    my $xml = authenticate(udid => $s->{phone}, product => 'iPhone15,2',
        serial => 'PHONESERIAL1', os_version => '17.0',
        build_version => '21A329', device_name => 'iPhone',
        model => 'MQ0T3', model_name => 'iPhone');
    my $res = signed_checkin($s, $xml);

    expect($line, '200 from the MDM server', $res)
        unless $res->{status} == 200;
    print "$line  -> 200 from the MDM server\n";
}

sub step2_token_update {
    my ($s) = @_;
    my $line = "[2] phone  PUT  $CHECKIN (TokenUpdate, Mdm-Signature)";

    my $res = signed_checkin($s, token_update(udid => $s->{phone}));

    expect($line, '200 from the MDM server', $res)
        unless $res->{status} == 200;
    print "$line  -> 200 from the MDM server\n";
}

sub step3_phone_learned {
    my ($s) = @_;
    my $phone = uc $s->{phone};
    my $line = "[3] redis  mdm_watch:device:$phone";

    if (!$s->{redis}) {
        print "$line  -> phone learned, not shown (no --redis)\n";
        return;
    }

    # the module records the device once the MDM server has answered
    my %device;
    my $deadline = time + 5;
    while (1) {
        my @fields = redis($s, 'HGETALL', "mdm_watch:device:$phone");
        %device = @fields % 2 ? () : @fields;
        last if ($device{message} // '') eq 'TokenUpdate'
            || time >= $deadline;
        select undef, undef, undef, 0.05;
    }

    my $identity = $s->{pki}->identity('phone');
    fail($line, "a record of the TokenUpdate with identity $identity",
        format_hash(\%device))
        unless ($device{message} // '') eq 'TokenUpdate'
            && ($device{identity} // '') eq $identity;

    $device{identity} = short($device{identity}, 16);
    printf "%s  -> phone learned: %s\n", $line, format_hash(\%device);
}

sub step4_challenge {
    my ($s) = @_;
    my $line = "[4] watch  POST $ENROLL (machine info, no token)";

    my $body = signed_machine_info($s);
    my $res = post_machine_info($s, $body);
    my $st = expect_challenge($line, $res);

    $s->{security_token} = $st;
    print "$line  -> 403 challenge, security token ", short($st), "\n";
}

sub step5_get_token {
    my ($s) = @_;
    my $line = "[5] phone  PUT  $CHECKIN (GetToken, Mdm-Signature)";

    my $xml = get_token(
        udid           => $s->{phone},
        security_token => $s->{security_token},
        watch_udid     => $s->{watch},
    );
    my $res = signed_checkin($s, $xml);

    my $want = "200 application/xml plist with TokenData";
    expect($line, $want, $res) unless $res->{status} == 200
        && content_type($res) eq 'application/xml';

    my $token = parse_token_data($res->{body});
    expect($line, $want, $res) unless defined $token && length $token;
    fail($line, 'a token made by ngx_mdm_watch_module',
        'the stand-in MDM server\'s TokenData: the GetToken went upstream')
        if $token eq 'stand-in';

    $s->{token_data} = $token;
    printf "%s  -> 200 TokenData, %d bytes\n", $line, length $token;
}

sub step6_enroll {
    my ($s) = @_;
    my $line = "[6] watch  POST $ENROLL (machine info + PAIRING_TOKEN)";

    my $body = signed_machine_info($s, PAIRING_TOKEN => $s->{token_data});
    my $res = post_machine_info($s, $body);

    expect($line, "200 $PROFILE_TYPE enrollment profile", $res)
        unless $res->{status} == 200 && content_type($res) eq $PROFILE_TYPE
            && $res->{body} =~ /com\.apple\.mdm/;

    my $seen = header($res, 'X-Standin-Paired-Phone-UDID');
    fail($line, "X-Paired-Phone-UDID $s->{phone} sent upstream",
        'X-Paired-Phone-UDID ' . ($seen // 'missing'))
        unless defined $seen && uc $seen eq uc $s->{phone};

    $s->{enroll_body} = $body;
    printf "%s  -> 200 profile, %d bytes, upstream saw phone %s\n",
        $line, length $res->{body}, $seen;
}

sub step7_show_pair {
    my ($s) = @_;
    my $watch = uc $s->{watch};
    my $phone = uc $s->{phone};
    my $line = "[7] redis  mdm_watch:pair:$watch";

    if (!$s->{redis}) {
        print "$line  -> not shown (no --redis)\n";
        return;
    }

    my @pair = redis($s, 'HGETALL', "mdm_watch:pair:$watch");
    my %pair = @pair % 2 ? () : @pair;
    fail($line, "a pair with phone_udid $phone", format_hash(\%pair))
        unless uc($pair{phone_udid} // '') eq $phone;

    my @watches = redis($s, 'SMEMBERS', "mdm_watch:phone:$phone");
    fail($line, "mdm_watch:phone:$phone holding $watch",
        '{' . join(', ', @watches) . '}')
        unless grep { uc $_ eq $watch } @watches;

    printf "%s  -> %s; mdm_watch:phone:%s -> {%s}\n",
        $line, format_hash(\%pair), $phone, join(', ', @watches);
}

sub step8_replay {
    my ($s) = @_;
    my $line = "[8] watch  POST $ENROLL (step 6 again, same token)";

    my $res = post_machine_info($s, $s->{enroll_body});
    my $st = expect_challenge($line, $res);

    print "$line  -> 403 challenge again (single use), security token ",
        short($st), "\n";
}


# step helpers

sub signed_machine_info {
    my ($s, %extra) = @_;
    my $xml = machine_info(UDID => $s->{watch}, %extra);
    return sign($xml, pki => $s->{pki}, signer => 'watch');
}

# a check-in of the phone, with the Mdm-Signature of its identity
sub signed_checkin {
    my ($s, $xml) = @_;
    my $signature = mdm_signature($xml, signer => 'phone', pki => $s->{pki});
    return http_request($s->{nginx}, 'PUT', $CHECKIN,
        ['Content-Type' => $CHECKIN_TYPE, 'Mdm-Signature' => $signature],
        $xml);
}

sub post_machine_info {
    my ($s, $body) = @_;
    return http_request($s->{nginx}, 'POST', $ENROLL,
        ['Content-Type' => $CMS_TYPE], $body);
}

sub expect_challenge {
    my ($line, $res) = @_;
    my $want = "403 application/json, code $MISSING, details.security-token"
        . " a UUID";

    expect($line, $want, $res) unless $res->{status} == 403
        && content_type($res) eq 'application/json';

    my $json = eval { JSON::PP->new->decode($res->{body}) };
    $json = {} unless ref $json eq 'HASH';
    my $details = ref $json->{details} eq 'HASH' ? $json->{details} : {};
    my $st = $details->{'security-token'};

    expect($line, $want, $res) unless ($json->{code} // '') eq $MISSING
        && defined $st && !ref $st && $st =~ $UUID;
    return $st;
}

sub redis {
    my ($s, @cmd) = @_;
    my ($host, $port) = split /:/, $s->{redis};
    my @argv = ('redis-cli', '-h', $host, '-p', $port, '--raw', @cmd);

    open my $fh, '-|', @argv or die "simulator: cannot run redis-cli: $!\n";
    my @lines = <$fh>;
    close $fh or die "simulator: @argv failed\n";
    chomp @lines;
    return @lines;
}

sub format_hash {
    my ($h) = @_;
    my @first = grep { exists $h->{$_} }
        qw(watch_udid phone_udid udid message identity_source state serial
           product version os_version);
    my %seen = map { $_ => 1 } @first;
    my @keys = (@first, grep { !$seen{$_} } sort keys %$h);
    return '{' . join(', ', map { "$_: $h->{$_}" } @keys) . '}';
}

sub short {
    my ($s, $n) = @_;
    return substr($s, 0, $n // 8) . '...';
}

sub expect {
    my ($line, $want, $res) = @_;
    fail($line, $want, describe($res));
}

sub fail {
    my ($line, $want, $got) = @_;
    print "$line  -> FAILED\n";
    print "    expected: $want\n";
    print "    got:      $got\n";
    exit 1;
}

sub describe {
    my ($res) = @_;
    return "no answer: $res->{error}" if $res->{error};

    my $type = header($res, 'Content-Type') // 'no Content-Type';
    my $body = substr $res->{body}, 0, 300;
    $body =~ s/[^\x20-\x7e]+/ /g;
    return "$res->{status} $type, " . length($res->{body})
        . " bytes: $body";
}


# a small HTTP/1.1 client

=head2 http_request($hostport, $method, $path, \@headers, $body)

Sends one request on a new connection (C<Connection: close>), with Host
and, when there is a body, Content-Length.  Returns a hash: C<status>,
C<reason>, C<headers> ([name, value] in order), C<body> (de-chunked),
and C<error> when there was no complete answer (C<status> is then 0 if
no head came).

=cut

sub http_request {
    my ($hostport, $method, $path, $headers, $body) = @_;
    my $deadline = time + $RESPONSE_TIMEOUT;

    my $sock = IO::Socket::INET->new(
        PeerAddr => $hostport,
        Proto    => 'tcp',
        Timeout  => $CONNECT_TIMEOUT,
    ) or return { error => "connect $hostport: $@", status => 0,
                  body => '' };
    binmode $sock;

    my $req = request_bytes($hostport, $method, $path, $headers, $body);
    my $c = { sock => $sock, buf => '', deadline => $deadline };

    my $res = send_all($c, $req) ? read_response($c, $method)
                                 : { error => "send: $!" };
    close $sock;
    $res->{status} //= 0;
    $res->{body} //= '';
    return $res;
}

sub request_bytes {
    my ($hostport, $method, $path, $headers, $body) = @_;
    my @h = ('Host' => $hostport, @{ $headers || [] });
    push @h, 'Content-Length' => length $body if defined $body;
    push @h, 'Connection' => 'close';

    my $out = "$method $path HTTP/1.1\r\n";
    for (my $i = 0; $i < @h; $i += 2) {
        $out .= "$h[$i]: $h[$i + 1]\r\n";
    }
    return $out . "\r\n" . ($body // '');
}

sub send_all {
    my ($c, $data) = @_;
    my $select = IO::Select->new($c->{sock});
    my $off = 0;

    while ($off < length $data) {
        my $left = $c->{deadline} - time;
        return 0 if $left <= 0 || !$select->can_write($left);
        my $n = syswrite $c->{sock}, $data, 65536, $off;
        return 0 unless $n;
        $off += $n;
    }
    return 1;
}

sub read_more {
    my ($c) = @_;
    my $left = $c->{deadline} - time;
    return 0 if $left <= 0;
    return 0 unless IO::Select->new($c->{sock})->can_read($left);
    my $n = sysread $c->{sock}, $c->{buf}, 65536, length $c->{buf};
    return $n ? 1 : 0;
}

sub read_response {
    my ($c, $method) = @_;

    # interim 1xx answers come before the real one
    for (1 .. 10) {
        my $res = read_head($c) or return { error => 'no response head' };
        next if $res->{status} >= 100 && $res->{status} < 200;

        my $err = read_response_body($c, $res, $method);
        $res->{error} = $err if $err;
        return $res;
    }
    return { error => 'too many interim responses' };
}

sub read_head {
    my ($c) = @_;
    my $end;
    until (defined($end = head_end($c->{buf}))) {
        return undef if length $c->{buf} > 65536 || !read_more($c);
    }
    my $head = substr $c->{buf}, 0, $end, '';
    my @lines = split /\r?\n/, $head;

    my ($status, $reason) = shift(@lines) =~ m{^HTTP/\d\.\d (\d{3}) ?(.*)$}
        or return undef;
    my @headers = map { /^([^:]+):\s*(.*?)\s*$/ ? [$1, $2] : () } @lines;
    return { status => $status, reason => $reason, headers => \@headers };
}

sub head_end {
    my ($buf) = @_;
    return $buf =~ /\r?\n\r?\n/ ? $+[0] : undef;
}

sub read_response_body {
    my ($c, $res, $method) = @_;
    my $te = header($res, 'Transfer-Encoding') // '';
    my $len = header($res, 'Content-Length');
    my $status = $res->{status};

    $res->{body} = '';
    return undef if $method eq 'HEAD' || $status == 204 || $status == 304;
    return read_chunked_body($c, $res) if $te =~ /chunked/i;

    if (defined $len) {
        return "bad Content-Length $len" unless $len =~ /^\d{1,12}$/;
        return "Content-Length $len too large" if $len > $MAX_RESPONSE;
        while (length $c->{buf} < $len) {
            return 'body cut short' unless read_more($c);
        }
        $res->{body} = substr $c->{buf}, 0, $len, '';
        return undef;
    }

    # no length: the body ends when the server closes
    while (read_more($c)) {
        return 'body too large' if length $c->{buf} > $MAX_RESPONSE;
    }
    $res->{body} = $c->{buf};
    $c->{buf} = '';
    return undef;
}

sub read_chunked_body {
    my ($c, $res) = @_;

    while (1) {
        my $line = read_line($c) // return 'chunk size cut short';
        my ($hex) = $line =~ /^([0-9A-Fa-f]{1,8})/
            or return "bad chunk size line";
        my $size = hex $hex;
        last if $size == 0;
        return 'body too large'
            if length($res->{body}) + $size > $MAX_RESPONSE;

        while (length $c->{buf} < $size + 2) {
            return 'chunk cut short' unless read_more($c);
        }
        $res->{body} .= substr $c->{buf}, 0, $size, '';
        substr $c->{buf}, 0, 2, '';
    }
    for (1 .. 100) {
        my $line = read_line($c) // return 'trailer cut short';
        return undef if $line =~ /^\r?\n$/;
    }
    return 'too many trailer fields';
}

sub read_line {
    my ($c) = @_;
    my $i;
    until (($i = index $c->{buf}, "\n") >= 0) {
        return undef if length $c->{buf} > 8192 || !read_more($c);
    }
    return substr $c->{buf}, 0, $i + 1, '';
}

sub header {
    my ($res, $name) = @_;
    for my $h (@{ $res->{headers} || [] }) {
        return $h->[1] if lc $h->[0] eq lc $name;
    }
    return undef;
}

sub content_type {
    my ($res) = @_;
    my $type = header($res, 'Content-Type') // '';
    $type =~ s/\s*;.*//s;
    return lc $type;
}

1;
